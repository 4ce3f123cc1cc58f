# The README's two commands: `make demo` (set up + main job) and `make test` (set up + tests).
.PHONY: setup demo test bench

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/gen3d text-to-3d "a large red snowman"

test:
	@GEN3D_EXTRAS=dev,cluster bash scripts/setup.sh
	@bash scripts/install_browser.sh
	GEN3D_REQUIRE_SHARED=1 .venv/bin/python -m pytest -q

bench: setup
	.venv/bin/gen3d bench samplers --json bench-out/samplers.json
