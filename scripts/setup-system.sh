#!/usr/bin/env bash
# What fnbench needs from this machine beyond Python: the one place that installs it.
#
#   scripts/setup-system.sh demo         toolchains for the functions (cargo, go, node, JDK 17, Maven) and
#                                        the Debian packages that compile Rust to wasm32-wasi (rust-wasm)
#   scripts/setup-system.sh lambda-demo  + autotools, cmake and a C++ compiler (AWS's Node runtime client)
#   scripts/setup-system.sh test         + the real servers and tools the tests use (redis-server,
#                                        prometheus, nginx, wrk, chromium, openssl) and kustomize
#
# `make demo`, `make lambda-demo` and `make test` call it (and `.ci/run` is `make test`). It says
# what is missing and what it installs; only the Debian packages need root (apt-get, through sudo
# when not root). Toolchains are never installed here: a missing one is named, exit 2.
# FNBENCH_NO_INSTALL=1 only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${1:-test}
case "$profile" in demo|lambda-demo|test) ;; *)
  echo "setup: unknown profile '$profile' (demo, lambda-demo or test)" >&2; exit 2 ;;
esac

# Toolchains of the five runtimes: installed with the machine, never by this script.
missing_tools=()
for tool in python3 cargo go node npm java javac mvn; do
  command -v "$tool" >/dev/null || missing_tools+=("$tool")
done
if [ ${#missing_tools[@]} -gt 0 ]; then
  echo "setup: missing toolchain(s): ${missing_tools[*]} — install them first (Rust via rustup, Go, Node.js 20 with npm, a JDK 17 with Maven)" >&2
  exit 2
fi

# command (or an absolute path that must exist) → Debian package, per profile.
declare -a want=()
# rust-wasm's guest (functions/wasm/guest): Debian's rustc with its wasm32-wasi standard library
# and rust-lld. rustup's newer rustc builds everything else; it cannot fetch targets on every
# machine, and a std only works with its own compiler, so the guest builds with Debian's 1.63
# (/usr/bin/rustc). Pinned to Debian 12 (bookworm)'s versions; elsewhere the release's own.
rustc_deb=1.63.0+dfsg1-2 lld_deb=1:14.0.6-12
if [ "$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")" != bookworm ]; then rustc_deb="" lld_deb=""; fi
want+=("/usr/bin/rustc:rustc${rustc_deb:+=$rustc_deb}"
       "/usr/lib/rustlib/wasm32-wasi/lib:libstd-rust-dev-wasm32${rustc_deb:+=$rustc_deb}"
       "/usr/bin/rust-lld:lld-14${lld_deb:+=$lld_deb}")
if [ "$profile" != demo ]; then
  # The native part of AWS's Node.js runtime interface client (aws-lambda-ric) builds with these.
  want+=(autoreconf:autoconf automake:automake libtoolize:libtool cmake:cmake g++:g++ make:make)
fi
if [ "$profile" = test ]; then
  want+=(redis-server:redis-server prometheus:prometheus nginx:nginx-light wrk:wrk openssl:openssl
         chromium:chromium)
fi

have() { case "$1" in /*) [ -e "$1" ] ;; *) command -v "$1" >/dev/null ;; esac; }
packages=()
for pair in "${want[@]}"; do
  cmd=${pair%%:*} pkg=${pair#*:}
  have "$cmd" || packages+=("$pkg")
done

if [ ${#packages[@]} -gt 0 ]; then
  if [ "${FNBENCH_NO_INSTALL:-}" = 1 ]; then
    echo "setup: missing Debian package(s): ${packages[*]} (FNBENCH_NO_INSTALL=1: not installing)" >&2
    exit 2
  fi
  if [ "$(id -u)" = 0 ]; then sudo=()
  elif command -v sudo >/dev/null; then sudo=(sudo); echo "setup: root is needed for apt-get; asking sudo"
  else
    echo "setup: missing Debian package(s): ${packages[*]}; run as root: apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 2
  fi
  echo "setup: installing Debian package(s) for '$profile': ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  for pair in "${want[@]}"; do
    cmd=${pair%%:*}
    have "$cmd" || { echo "setup: '$cmd' is still missing after installing ${pair#*:}" >&2; exit 2; }
  done
fi

if [ "$profile" = test ]; then
  # kustomize renders deploy/k8s in the tests: built once from the Go module proxy into build/tools.
  KUSTOMIZE_VERSION=v5.8.1
  if [ "$(build/tools/kustomize version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
    echo "setup: building kustomize $KUSTOMIZE_VERSION into build/tools (go install)"
    GOBIN="$PWD/build/tools" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  fi
fi
echo "setup: system ready for '$profile'"
