#!/usr/bin/env bash
# The broker's users, with the passwords from the environment (`.env`, see .env.example):
# docker-compose.yml runs this once (service `broker-users`) before RabbitMQ starts. It reads the
# definitions template (vhost, users, permissions; each user's password_hash is the name of the
# variable holding its password), hashes each password the way RabbitMQ does
# (rabbit_password_hashing_sha256: base64(4-byte salt + SHA-256(salt + password))) and writes the
# definitions RabbitMQ imports at boot. No password is written anywhere, only its salted hash.
#
# A missing password, one still at its example value, or one that cannot go into a URL unquoted
# stops here with one line saying what to do, and RabbitMQ does not start.
#
# Usage: users.sh TEMPLATE OUTPUT
set -euo pipefail
template=$1 out=$2

refuse() {
  echo "fedmq: $1 (copy .env.example to .env and set every password, or run deploy/make-env > .env)" >&2
  exit 2
}

hex_bytes() { sed 's/../\\x&/g'; }

password_hash() {
  local salt digest
  salt=$(head -c4 /dev/urandom | od -An -tx1 | tr -d ' \n')
  digest=$( { printf '%b' "$(hex_bytes <<<"$salt")"; printf '%s' "$1"; } | sha256sum | cut -c1-64)
  printf '%b' "$(hex_bytes <<<"$salt$digest")" | base64 -w0
}

definitions=$(cat "$template")
for variable in $(grep -oE '"password_hash": *"FEDMQ_[A-Z_]+_PASSWORD"' "$template" | grep -oE 'FEDMQ_[A-Z_]+'); do
  password=${!variable:-}
  [[ -n $password ]] || refuse "$variable is not set"
  [[ $password != change-me* ]] || refuse "$variable is still the example value from .env.example"
  [[ $password =~ ^[A-Za-z0-9._~-]{12,}$ ]] \
    || refuse "$variable must be at least 12 characters of A-Z a-z 0-9 . _ ~ - (it goes into URLs)"
  definitions=${definitions//\"$variable\"/\"$(password_hash "$password")\"}
done
umask 077
printf '%s\n' "$definitions" > "$out.tmp"
# Readable by the broker only (it runs as the rabbitmq user; this one-shot runs as root).
if [[ $(id -u) == 0 ]] && id rabbitmq >/dev/null 2>&1; then chown rabbitmq:rabbitmq "$out.tmp"; fi
mv "$out.tmp" "$out"
echo "fedmq: broker users written to $out"
