#!/bin/sh
# Checks for the Debian packages the build needs. As root, installs what is
# missing; otherwise prints the one apt line that would, and fails.
missing=""
need() { # header package
  for d in /usr/include /usr/local/include /usr/include/x86_64-linux-gnu /usr/include/aarch64-linux-gnu; do
    [ -e "$d/$1" ] && return 0
  done
  missing="$missing $2"
}
need cjson/cJSON.h libcjson-dev
need utf8proc.h libutf8proc-dev
need zlib.h zlib1g-dev
need cblas.h libopenblas-dev
need png.h libpng-dev
need jpeglib.h libjpeg-dev
need webp/decode.h libwebp-dev
command -v gcc >/dev/null 2>&1 || missing="$missing gcc"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sdc: installing missing packages:$missing"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null || {
    echo "sdc: error: apt-get install$missing failed" >&2; exit 1; }
  exit 0
fi
echo "sdc: error: missing build dependencies; install them with:" >&2
echo "  sudo apt-get install -y$missing" >&2
exit 1
