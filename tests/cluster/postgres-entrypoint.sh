#!/bin/sh
# The entrypoint of the real node's PostgreSQL image (tests/cluster/image-build.sh), with the
# official image's environment contract: POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA.
# On the first start: initdb, scram-sha-256 over TCP, listen everywhere, the database created.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}" "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
mkdir -p "$PGDATA"
# Every start, as the official image does: the kubelet's fsGroup pass makes the volume
# group-writable and setgid, and PostgreSQL refuses a data directory that is not 0700
# (five digits: GNU chmod keeps a directory's setgid bit otherwise).
chmod 00700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	pw=/tmp/.pgpass.$$
	umask 077
	printf '%s' "$POSTGRES_PASSWORD" >"$pw"
	initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
		--auth-local=trust --auth-host=scram-sha-256 >/dev/null
	rm -f "$pw"
	printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
	printf "listen_addresses = '*'\njit = off\nunix_socket_directories = '/var/run/postgresql'\n" >>"$PGDATA/postgresql.conf"
	if [ "$POSTGRES_DB" != postgres ]; then
		printf 'CREATE DATABASE "%s" OWNER "%s";\n' "$POSTGRES_DB" "$POSTGRES_USER" |
			postgres --single -D "$PGDATA" postgres >/dev/null
	fi
fi
exec postgres -D "$PGDATA" "$@"
