# Sourced by scripts/run and scripts/test: make .venv with this project installed (with the
# extras given in $1) unless it already is, so a fresh clone needs only Python 3.11 or later.

find_python() {
    for candidate in python3.11 python3.12 python3.13 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    echo "error: Python 3.11 or later is needed (python3.11 or python3 on PATH)" >&2
    return 1
}

ensure_venv() {
    local extras="$1"
    local spec="."
    [ -n "$extras" ] && spec=".[$extras]"
    if [ ! -x .venv/bin/python ]; then
        local python
        python=$(find_python)
        echo "creating .venv with $python" >&2
        "$python" -m venv .venv
    fi
    # Reinstall only when pyproject.toml or the extras changed since the last install.
    local stamp
    stamp=$(cat pyproject.toml | .venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')
    local marker=".venv/.installed-${extras:-base}-$stamp"
    # Extras only add packages: any install of this pyproject.toml serves the base one.
    if [ -z "$extras" ] && compgen -G ".venv/.installed-*-$stamp" >/dev/null; then
        return 0
    fi
    if [ ! -f "$marker" ]; then
        echo "installing $spec into .venv" >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
        rm -f .venv/.installed-"${extras:-base}"-*
        touch "$marker"
    fi
}
