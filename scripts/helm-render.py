#!/usr/bin/env python3
"""Renders or lints a Helm chart offline with Helm's own engine, for
tests/deploy.rs.

helm-python-sdk (installed by scripts/setup.sh into .tools/helm) binds Helm's
Go SDK as a shared library: this is `helm template` / `helm lint` without the
helm binary, which Debian does not package.

usage:
  helm-render.py render CHART RELEASE NAMESPACE VALUES_JSON
      prints {"<template path>": "<manifest>", ...} as JSON (NOTES.txt and
      templates that render to nothing are left out)
  helm-render.py lint CHART NAMESPACE VALUES_JSON
      prints Helm's lint report as JSON

A render error (a `required` or `fail` in a template, bad values) goes to
stderr with exit status 1.
"""
import json
import sys

import helm_python as helm


def main(argv):
    if len(argv) == 6 and argv[1] == "render":
        _, _, chart, release, namespace, values = argv
        with helm.Chart.load(chart) as c:
            out = c.render(json.loads(values), name=release, namespace=namespace)
        out = {
            path: text
            for path, text in out.items()
            if not path.endswith("NOTES.txt") and text.strip()
        }
    elif len(argv) == 5 and argv[1] == "lint":
        _, _, chart, namespace, values = argv
        out = helm.lint(chart, json.loads(values), strict=True, namespace=namespace)
    else:
        sys.stderr.write(__doc__)
        return 2
    json.dump(out, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except helm.HelmError as e:  # a template's fail/required, or bad values
        sys.stderr.write(f"helm: {e}\n")
        sys.exit(1)
