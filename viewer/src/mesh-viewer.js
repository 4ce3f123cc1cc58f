// The run page's interactive 3D view: GLB/glTF meshes (and PLY/OBJ files) with orbit controls and the
// display toggles. It renders on demand (after a change) rather than every frame, which keeps an idle
// tab cheap on a CPU-only machine.

import * as THREE from "three";
import { OrbitControls } from "three/addons/controls/OrbitControls.js";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
import { OBJLoader } from "three/addons/loaders/OBJLoader.js";
import { PLYLoader } from "three/addons/loaders/PLYLoader.js";

export const DEFAULT_FOV = 40;
const FIT_DIRECTION = new THREE.Vector3(1, 0.6, 1.4).normalize(); // a three-quarter view from above
const Z_UP_TO_Y_UP = new THREE.Matrix4().makeRotationX(-Math.PI / 2);

function loadWith(loader, url) {
  return new Promise((resolve, reject) => loader.load(url, resolve, undefined, reject));
}

const srgbToLinear = (c) => (c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);

/** A float copy of a colour attribute with sRGB-encoded rgb turned linear (alpha kept). */
function linearColors(attribute) {
  const out = new THREE.Float32BufferAttribute(attribute.count * attribute.itemSize, attribute.itemSize);
  for (let i = 0; i < attribute.count; i += 1) {
    for (let c = 0; c < attribute.itemSize; c += 1) {
      const value = attribute.getComponent(i, c);
      out.setComponent(i, c, c < 3 ? srgbToLinear(value) : value);
    }
  }
  return out;
}

/**
 * Primitives without a material are how gen3d exports meshes (trimesh writes vertex colours and no
 * material). glTF's default material for them is fully metallic and renders black without an environment
 * map, and their colour bytes are sRGB like the run's PNG views, while glTF reads COLOR_0 as linear. Show
 * them matte with their colours decoded as sRGB; a file's own materials are left as they are.
 */
function showGen3dMeshesAsExported(gltf) {
  const meshes = gltf.parser.json.meshes || [];
  gltf.scene.traverse((node) => {
    const ref = node.isMesh && gltf.parser.associations.get(node);
    const primitive = ref && meshes[ref.meshes]?.primitives[ref.primitives];
    if (!primitive || primitive.material !== undefined) return;
    node.material = new THREE.MeshStandardMaterial({ flatShading: node.material.flatShading, metalness: 0, roughness: 0.8 });
    if (node.geometry.hasAttribute("color")) node.geometry.setAttribute("color", linearColors(node.geometry.getAttribute("color")));
  });
  return gltf.scene;
}

/** A three.js object for one file; PLY/OBJ keep the world's z up (conventions) and are turned to y up. */
async function loadObject(url, { format, zUp }) {
  let object;
  if (format === "glb" || format === "gltf") {
    object = showGen3dMeshesAsExported(await loadWith(new GLTFLoader(), url));
  } else if (format === "ply") {
    const geometry = await loadWith(new PLYLoader(), url);
    const colored = geometry.hasAttribute("color");
    if (geometry.index) {
      geometry.computeVertexNormals();
      object = new THREE.Mesh(geometry, new THREE.MeshStandardMaterial({ vertexColors: colored, roughness: 0.8 }));
    } else {
      object = new THREE.Points(geometry, new THREE.PointsMaterial({ size: 0.01, vertexColors: colored }));
    }
  } else if (format === "obj") {
    object = await loadWith(new OBJLoader(), url);
  } else {
    throw new Error(`cannot show .${format} files`);
  }
  if (zUp) {
    const holder = new THREE.Group();
    object.applyMatrix4(Z_UP_TO_Y_UP);
    holder.add(object);
    object = holder;
  }
  return object;
}

export class MeshViewer {
  constructor(canvas, { background = "#f3f4f6" } = {}) {
    this.canvas = canvas;
    this.renderer = new THREE.WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(window.devicePixelRatio || 1);
    this.scene = new THREE.Scene();
    this.scene.background = new THREE.Color(background);
    this.camera = new THREE.PerspectiveCamera(DEFAULT_FOV, 1, 0.01, 100);
    // Sky/ground fill plus a key light riding with the camera: every side you orbit to is lit.
    // (No environment map: building one costs seconds of shader work on software WebGL.)
    const key = new THREE.DirectionalLight(0xffffff, 1.6);
    key.position.set(1, 1.2, 0.4);
    this.camera.add(key);
    this.scene.add(this.camera, new THREE.HemisphereLight(0xffffff, 0x8d8d8d, 1.4));
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener("change", () => this.render());
    this.object = null;
    this.cache = new Map();
    this.display = { wireframe: false, vertexColors: true, normals: false };
    this.normalMaterial = new THREE.MeshNormalMaterial();
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.resize();
  }

  resize() {
    const width = this.canvas.clientWidth;
    const height = this.canvas.clientHeight;
    if (!width || !height) return;
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.render();
  }

  render() {
    this.renderer.render(this.scene, this.camera);
  }

  /** The object for the file at `url`, loaded once: a 4D run steps through its frames again and again. */
  load(url, { format, zUp = false } = {}) {
    if (!this.cache.has(url)) this.cache.set(url, loadObject(url, { format, zUp }));
    return this.cache.get(url);
  }

  /**
   * Load (once) and show the file at `url`; the camera stays where it is unless `fit` is true. Resolves to
   * the object, or to null when a later call replaced it before it finished loading (a dragged slider).
   */
  async show(url, { format, zUp = false, fit = false } = {}) {
    const request = (this.requests = (this.requests || 0) + 1);
    const object = await this.load(url, { format, zUp });
    if (request !== this.requests) return null;
    if (this.object) this.scene.remove(this.object);
    this.object = object;
    this.scene.add(object);
    this.applyDisplay();
    if (fit) this.fit();
    this.render();
    return object;
  }

  /** Put the whole object in view from a three-quarter angle, orbiting its centre. */
  fit() {
    const sphere = new THREE.Box3().setFromObject(this.object).getBoundingSphere(new THREE.Sphere());
    const radius = sphere.radius || 1;
    const fov = THREE.MathUtils.degToRad(DEFAULT_FOV);
    const distance = (1.15 * radius) / Math.sin(Math.min(fov, fov * this.camera.aspect) / 2);
    this.setCamera({
      position: sphere.center.clone().addScaledVector(FIT_DIRECTION, distance).toArray(),
      target: sphere.center.toArray(),
      fov: DEFAULT_FOV,
    });
  }

  /**
   * Place the camera exactly: position and target in the file's (glTF, y-up) coordinates, vertical fov in
   * degrees; near/far default to a range around the target. The same numbers give the same image, which
   * is what the browser tests rely on.
   */
  setCamera({ position, target = [0, 0, 0], fov = DEFAULT_FOV, near, far }) {
    const eye = new THREE.Vector3(...position);
    const centre = new THREE.Vector3(...target);
    const distance = eye.distanceTo(centre) || 1;
    this.camera.fov = fov;
    this.camera.near = near ?? distance / 100;
    this.camera.far = far ?? distance * 100;
    this.camera.up.set(0, 1, 0);
    this.camera.position.copy(eye);
    this.controls.target.copy(centre);
    this.camera.lookAt(centre);
    this.camera.updateProjectionMatrix();
    this.controls.update();
    this.render();
  }

  getCamera() {
    return {
      position: this.camera.position.toArray(),
      target: this.controls.target.toArray(),
      fov: this.camera.fov,
    };
  }

  setDisplay(changes) {
    Object.assign(this.display, changes);
    this.applyDisplay();
    this.render();
  }

  /** Apply wireframe / vertex colours / normals to every mesh, keeping each mesh's own material aside. */
  applyDisplay() {
    this.object?.traverse((node) => {
      if (!node.isMesh) return;
      node.userData.ownMaterial ??= node.material;
      const own = node.userData.ownMaterial;
      const hasColors = node.geometry.hasAttribute("color");
      for (const material of Array.isArray(own) ? own : [own]) {
        material.wireframe = this.display.wireframe;
        material.vertexColors = hasColors && this.display.vertexColors;
        material.needsUpdate = true;
      }
      this.normalMaterial.wireframe = this.display.wireframe;
      node.material = this.display.normals ? this.normalMaterial : own;
    });
  }
}
