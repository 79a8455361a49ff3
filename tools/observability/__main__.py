"""`python -m tools.observability`: write the generated files under deploy/observability/."""

from .render import main

main()
