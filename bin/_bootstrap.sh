# Shared by bin/demo and bin/test: make sure uv and the locked environment exist.
# Sourced, not executed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v uv >/dev/null 2>&1; then
  echo "[bootstrap] installing uv (pip --user)" >&2
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi
# Bytecode is compiled at install: with PYTHONDONTWRITEBYTECODE set (as on CI machines)
# every worker, beat and simulator process would otherwise recompile the openai and
# anthropic SDKs from source, several CPU-seconds per process start.
uv sync --frozen --quiet --compile-bytecode
