#!/bin/sh
# Install the Debian packages pacs-triage needs, if their programs are missing.
# Usage: install-system-packages.sh PACKAGE...   (redis-server, redis-sentinel, dcmtk, orthanc, prometheus, rabbitmq-server, chromium, chromium-driver)
set -eu
missing=""
for pkg in "$@"; do
  case "$pkg" in
    redis-server) prog=redis-server ;;
    dcmtk) prog=storescu ;;
    orthanc) prog=Orthanc ;;
    chromium-driver) prog=chromedriver ;;
    *) prog="$pkg" ;;
  esac
  command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
echo "installing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps the packages' own services from starting: pacs-triage runs them itself.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends $missing
