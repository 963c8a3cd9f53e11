#!/usr/bin/env bash
# Renders the plain manifests in deploy/kubernetes/ from the Helm chart
# deploy/helm/rds-csi, the one source of the Kubernetes objects, with Helm's
# own engine (scripts/helm-render.py, installed by scripts/setup.sh into
# .tools/helm). Run it after changing the chart; tests/deploy.rs renders again
# and fails on any difference.
#
# usage: scripts/render-deploy.sh [OUTDIR]   (default: deploy/kubernetes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-deploy/kubernetes}
python="${RDS_TOOLS:-.tools}/helm/bin/python3"
if [ ! -x "$python" ]; then
	echo "render-deploy: $python missing: run scripts/setup.sh" >&2
	exit 1
fi
"$python" scripts/helm-render.py manifests deploy/helm/rds-csi "$out" >/dev/null
echo "render-deploy: wrote the chart's manifests into $out"
