"""`python -m tools.k8s`: write the manifests under deploy/k8s/."""

from .render import main

main()
