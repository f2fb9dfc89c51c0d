#!/usr/bin/env bash
# Installs the system packages the test suite needs when they are missing:
# openssl (independent verifier), softhsm2 (the HSM), opensc (pkcs11-tool), chromium (Admin Web tests),
# postgresql (initdb/pg_ctl: the cluster tests start a real server), haproxy (TCP load balancer
# in front of two nodes), prometheus (promtool: the alert rules' tests) and wrk (bench/bench_rest.py's
# native load generator beside its Python client).
set -euo pipefail
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v curl >/dev/null || need+=(curl)
command -v chromium >/dev/null || need+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v promtool >/dev/null || need+=(prometheus)  # promtool checks docs/monitoring/alert-rules.yml
command -v wrk >/dev/null || need+=(wrk)  # bench/bench_rest.py (without it the bench uses its Python client only)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]}; install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
