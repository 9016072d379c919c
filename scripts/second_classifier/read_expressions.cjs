// A second, independent expression classifier for scripts/eval_second_classifier.py (evaluation only).
//
// face-api's SSD MobileNet v1 face box and its FaceExpressionNet (7 classes; MIT, the weights ship in the
// npm package @vladmandic/face-api), run on TensorFlow.js's WebAssembly backend. It was trained on other
// data than the FER critic in ../shared/tools/fer-critic (FER2013), so where the two agree a reading is not
// one classifier's quirk.
//
// usage: node read_expressions.cjs IMG...   (or one path per line on stdin)
// prints one JSON line per image, in order: {"image", "box": [x, y, w, h], "probs": {class: p}} or
// {"image", "error"}; PNG and JPEG only.
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
const { PNG } = require('pngjs');
const jpeg = require('jpeg-js');

const MODELS = path.join(path.dirname(require.resolve('@vladmandic/face-api/package.json')), 'model');

async function weightMap(name) {
  const manifest = JSON.parse(fs.readFileSync(path.join(MODELS, `${name}-weights_manifest.json`)));
  const specs = manifest.flatMap((group) => group.weights);
  const parts = manifest.flatMap((group) => group.paths.map((p) => fs.readFileSync(path.join(MODELS, p))));
  const buf = Buffer.concat(parts);
  return tf.io.decodeWeights(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length), specs);
}

function readRgb(file) {
  const data = fs.readFileSync(file);
  const png = data.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
  const img = png ? PNG.sync.read(data) : jpeg.decode(data, { useTArray: true, formatAsRGBA: true });
  const n = img.width * img.height;
  const rgb = new Int32Array(n * 3);
  for (let i = 0; i < n; i += 1) {
    rgb[3 * i] = img.data[4 * i];
    rgb[3 * i + 1] = img.data[4 * i + 1];
    rgb[3 * i + 2] = img.data[4 * i + 2];
  }
  return tf.tensor3d(rgb, [img.height, img.width, 3], 'int32');
}

async function paths() {
  const args = process.argv.slice(2);
  if (args.length) return args;
  const text = fs.readFileSync(0, 'utf8');
  return text.split('\n').map((s) => s.trim()).filter((s) => s.length);
}

(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  faceapi.nets.ssdMobilenetv1.loadFromWeightMap(await weightMap('ssd_mobilenetv1_model'));
  faceapi.nets.faceExpressionNet.loadFromWeightMap(await weightMap('face_expression_model'));
  const options = new faceapi.SsdMobilenetv1Options({ minConfidence: 0.3, maxResults: 1 });
  for (const file of await paths()) {
    let line;
    try {
      const image = readRgb(file);
      const found = await faceapi.detectSingleFace(image, options).withFaceExpressions();
      image.dispose();
      if (found) {
        const b = found.detection.box;
        const probs = Object.fromEntries(Object.entries(found.expressions).map(([k, v]) => [k, +v.toFixed(5)]));
        line = { image: file, box: [b.x, b.y, b.width, b.height].map(Math.round), probs };
      } else {
        line = { image: file, error: 'no face' };
      }
    } catch (err) {
      line = { image: file, error: String(err.message || err).split('\n')[0] };
    }
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
})();
