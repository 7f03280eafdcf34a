# Sourced by .ci/run: headless Chromium for the test that renders `automl report`'s page and checks the plots
# are drawn. Installs Debian's chromium when no browser is on the machine.

ensure_chromium() {
  local started=$SECONDS
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    return 0
  fi
  echo "chromium.sh: installing Chromium from Debian's packages" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || { echo "chromium.sh: Chromium did not install" >&2; return 1; }
  echo "chromium.sh: $(chromium --version 2>/dev/null) installed in $((SECONDS - started)) s" >&2
}
