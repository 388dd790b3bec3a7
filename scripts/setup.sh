# Sourced by scripts/test and scripts/demo: installs what a fresh clone needs, saying what it does.

ensure_node_modules() {
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    echo "==> Installing npm dependencies (npm ci)"
    npm ci --no-audit --no-fund
  fi
}

# $1: command, $2: Debian package, $3: Homebrew formula
ensure_binary() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${ALLOW_SYSTEM_INSTALL:-1}" = 1 ] && command -v apt-get >/dev/null 2>&1; then
    local sudo=""
    if [ "$(id -u)" != 0 ]; then
      if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; else sudo=""; fi
    fi
    if [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; then
      echo "==> $1 not found: installing Debian package $2 (apt-get; set ALLOW_SYSTEM_INSTALL=0 to forbid)"
      $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
      command -v "$1" >/dev/null 2>&1 && return 0
    fi
  elif [ "${ALLOW_SYSTEM_INSTALL:-1}" = 1 ] && command -v brew >/dev/null 2>&1; then
    echo "==> $1 not found: installing $3 with Homebrew (set ALLOW_SYSTEM_INSTALL=0 to forbid)"
    brew install "$3" && return 0
  fi
  echo "error: $1 is needed and could not be installed here. Install it yourself:" >&2
  echo "       sudo apt-get install $2   (Debian/Ubuntu)   or   brew install $3   (macOS)" >&2
  return 1
}
