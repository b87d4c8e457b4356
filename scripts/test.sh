#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test (unit, PyTorch
# reference, CLI end-to-end). This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
