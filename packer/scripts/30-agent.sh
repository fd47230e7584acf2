#!/usr/bin/env bash
# The agent in its own venv at /opt/unified/venv, and the stack's services.yaml at
# /etc/unified/services.yaml, checked by the agent itself before anything is baked.
# Inputs: UNIFIED_AGENT_DIST (uploaded wheel or sdist), UNIFIED_SERVICES_SRC.
set -o errexit -o nounset -o pipefail

venv=/opt/unified/venv

install -d -m 0755 /opt/unified /etc/unified
python3 -m venv "${venv}"
"${venv}/bin/pip" install --no-cache-dir --disable-pip-version-check "${UNIFIED_AGENT_DIST}"
# Operators run `agent status` over SSH without knowing where the venv is.
ln -sfn "${venv}/bin/agent" /usr/local/bin/agent

install -m 0644 -o root -g root "${UNIFIED_SERVICES_SRC}" /etc/unified/services.yaml
"${venv}/bin/agent" validate --root / --services /etc/unified/services.yaml
