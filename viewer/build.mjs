// Build the viewer into gen3d/server/static/, which ships inside the Python package (no Node.js at run time).
// Output names are fixed (no content hashes) so a rebuild of unchanged sources gives identical files.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "gen3d", "server", "static");
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
console.log(`viewer built into ${out}`);
