// Build the viewer into gen3d/server/static/, which ships inside the Python package (no Node.js at run time).
// Output names are fixed (no content hashes) so a rebuild of unchanged sources gives identical files.
// The build writes SOURCES.sha256, the hash of the sources it was built from (`node build.mjs --hash`
// prints the current one), so set-up rebuilds only when sources change and a test catches a stale bundle.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "gen3d", "server", "static");

function files(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]);
}

// sha256 over "<path relative to viewer/>\n<sha256 of its bytes>\n" for each source, sorted by path
export function sourceHash() {
  const sources = ["package.json", "package-lock.json", "build.mjs"].map((name) => join(here, name))
    .concat(files(join(here, "src")));
  const lines = sources.map((path) => relative(here, path).split(sep).join("/")).sort()
    .map((name) => `${name}\n${createHash("sha256").update(readFileSync(join(here, name))).digest("hex")}\n`);
  return createHash("sha256").update(lines.join("")).digest("hex");
}

if (process.argv.includes("--hash")) {
  console.log(sourceHash());
} else {
  const { build } = await import("esbuild");
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  await build({
    entryPoints: [join(here, "src", "gallery.js"), join(here, "src", "run.js")],
    outdir: out,
    bundle: true,
    format: "esm",
    minify: true,
    target: ["es2022"],
    legalComments: "linked",
    logLevel: "warning",
  });
  for (const name of ["index.html", "run.html", "style.css"]) copyFileSync(join(here, "src", name), join(out, name));
  writeFileSync(join(out, "SOURCES.sha256"), sourceHash() + "\n");
  console.log(`viewer built into ${out}`);
}
