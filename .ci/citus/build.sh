#!/usr/bin/env bash
# Build and install Citus v13.2.2 (commit cc91f4c2, the newest release that supports
# PostgreSQL 15; v14 needs 16-18) into the Debian PostgreSQL 15, as root. About 2 minutes
# on 2 cores. Idempotent: exits at once when citus is already installed.
#
# The source: $CITUS_TARBALL, else citus-v13.2.2.tar.gz beside this script (not in the
# repository: 7.9 MB; .ci/run passes the copy CI keeps beside the clone). Any tarball of
# the tag works, e.g. https://github.com/citusdata/citus/archive/refs/tags/v13.2.2.tar.gz
# (AGPL-3.0).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PGLIB=$(pg_config --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
if [ -f "$PGLIB/citus.so" ]; then echo "citus already installed in $PGLIB"; exit 0; fi
TARBALL=${CITUS_TARBALL:-$HERE/citus-v13.2.2.tar.gz}
if [ ! -f "$TARBALL" ]; then
    echo "no Citus source at $TARBALL: set CITUS_TARBALL to a tarball of citus v13.2.2" >&2
    exit 1
fi
TARBALL=$(cd "$(dirname "$TARBALL")" && pwd)/$(basename "$TARBALL")
PACKAGES="postgresql-server-dev-15 libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev
    libssl-dev autoconf flex bison build-essential libselinux1-dev libxslt1-dev libpam0g-dev
    libreadline-dev zlib1g-dev"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
apt-get install -y -q $PACKAGES >/dev/null \
  || { apt-get update -q >/dev/null && apt-get install -y -q $PACKAGES >/dev/null; }
work=$(mktemp -d)
tar -C "$work" -xzf "$TARBALL"
cd "$work"/*/  # the tarball's one top folder (citus-src/, or citus-13.2.2/ from GitHub)
# PostgreSQL 15.20 exports have_createdb_privilege() from commands/dbcommands.h; Citus
# 13.2.2's static copy then fails to compile ("static declaration of
# 'have_createdb_privilege' follows non-static declaration"). The patch keeps the copy for
# PostgreSQL before 15.20 only.
patch -p0 < "$HERE/pg15.20-have_createdb_privilege.patch" >/dev/null
./configure >/dev/null
make -j"$(nproc)" >/dev/null
make install >/dev/null
rm -rf "$work"
echo "citus installed"
