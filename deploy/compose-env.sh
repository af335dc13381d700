#!/bin/sh
# Write the secrets docker-compose.yml needs into .env beside it (or the file given),
# fresh random values, readable by the owner only; refuse to overwrite an existing
# file: its keys (ESIGN_KEK ...) seal data that a new key could never open again.
#
#   sh deploy/compose-env.sh && docker compose up -d --build
#
# Passwords go into URLs (AMQP_URI, *_DATABASE_URL): hex keeps them URL-safe.
set -eu
cd "$(dirname "$0")/.."
out=${1:-.env}  # relative to the repository root
if [ -e "$out" ]; then
  echo "$out exists: keeping it (its keys seal stored data); remove it yourself to start afresh" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "openssl is needed to make the secrets" >&2; exit 1; }
hex() { openssl rand -hex "$1"; }
b64() { printf 'base64:%s' "$(openssl rand -base64 32)"; }
umask 077
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<ENV
# made by deploy/compose-env.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ); never commit this file
POSTGRES_PASSWORD=$(hex 16)
RABBITMQ_PASSWORD=$(hex 16)
RABBITMQ_IDENTITY_PASSWORD=$(hex 16)
RABBITMQ_DOCUMENTS_PASSWORD=$(hex 16)
RABBITMQ_SIGNING_PASSWORD=$(hex 16)
RABBITMQ_NOTIFY_PASSWORD=$(hex 16)
RABBITMQ_GATEWAY_PASSWORD=$(hex 16)
ESIGN_S3_ACCESS_KEY=esign$(hex 4)
ESIGN_S3_SECRET_KEY=$(hex 20)
DOCUMENTS_S3_ACCESS_KEY=documents$(hex 4)
DOCUMENTS_S3_SECRET_KEY=$(hex 20)
SIGNING_S3_ACCESS_KEY=signing$(hex 4)
SIGNING_S3_SECRET_KEY=$(hex 20)
ESIGN_KEK=$(b64)
ESIGN_BLIND_INDEX_KEY=$(b64)
ESIGN_OTP_KEY=$(b64)
DOCUMENTS_KEK=$(b64)
ESIGN_INVITE_KEY=$(b64)
ESIGN_SIGNING_KEK=$(b64)
ESIGN_LOG_SIGNING_KEY=$(b64)
NOTIFY_KEK=$(b64)
NOTIFY_PHONE_INDEX_KEY=$(b64)
GRAFANA_ADMIN_PASSWORD=$(hex 12)
# reachable by the services and by anyone verifying a PDF; set it to your public URL
ESIGN_PUBLIC_URL=http://gateway:8000
ENV
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out (keep it safe, and out of version control)" >&2
