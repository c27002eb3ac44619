#!/usr/bin/env bash
# Fetch, from the npm registry, the JavaScript that the built book loads from CDNs (the Jupyter widget
# manager, require.js and MathJax; anywidget, the front end of the live sampler; onnxruntime-web, which the live
# sampler loads on its first click) into .offline/ (git-ignored), so the browser test can serve them locally.
# Versions match the <script> tags myst-nb and Sphinx write into the pages.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .offline
if [ -f .offline/node_modules/@jupyter-widgets/html-manager/dist/embed-amd.js ] \
   && [ -f .offline/node_modules/requirejs/require.js ] \
   && [ -f .offline/node_modules/mathjax/es5/tex-mml-chtml.js ] \
   && [ -f .offline/node_modules/anywidget/dist/index.js ] \
   && [ -f .offline/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs ]; then
  exit 0
fi
npm install --silent --no-audit --no-fund --prefix .offline \
  "@jupyter-widgets/html-manager@1.0.6" "requirejs@2.3.4" "mathjax@3" "anywidget@0.11.0" \
  "onnxruntime-web@1.22.0"
