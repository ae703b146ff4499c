"""Print the requirements of a pyproject.toml (its dependencies and those of the named extras, one a line),
so an image installs them in a layer of their own, before the project's code is copied in."""

import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project.get("optional-dependencies", {})
wanted = [e.strip() for e in (sys.argv[2] if len(sys.argv) > 2 else "").split(",") if e.strip()]
missing = [e for e in wanted if e not in extras]
if missing:
    print(f"requirements.py: pyproject.toml has no extra {', '.join(missing)} (installing without it)", file=sys.stderr)
deps = list(project.get("dependencies", []))
for e in wanted:
    deps += [d for d in extras.get(e, []) if not d.replace(" ", "").startswith("wattproof[")]
print("\n".join(deps))
