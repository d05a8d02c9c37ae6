# normlab: draft targets from the plan helper (demo, reproduce, short); the lead merges `test`
# and the rest.
#
#   make demo        the whole pipeline on CPU (~10 min on 2 cores): data, plans/demo.ron, report
#   make reproduce   the paper's 68 cells on cuda:0 (plans/paper.ron), then the report
#   make short       the paper's grid with a 10-epoch schedule on cuda:0 (~1 GPU-hour)

CARGO    ?= cargo
DATA_DIR ?= data/cifar10
# Where CIFAR-10 is imported from when $(DATA_DIR) is absent: the local archive if present,
# else the official binary release.
DATA_SRC ?= $(firstword $(wildcard ../shared/data/cifar10-jpeg.tar.gz) https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz)
RESULTS  ?= results
JOBS_PER_DEVICE ?= 2

NORMLAB      = $(CARGO) run --release --quiet --
NORMLAB_CUDA = $(CARGO) run --release --quiet --features cuda,cudnn --

.PHONY: data demo reproduce short

# A complete $(DATA_DIR) is left alone (`normlab data` says so and does nothing).
data:
	$(NORMLAB) data --source $(DATA_SRC) --out $(DATA_DIR)

demo: data
	$(NORMLAB) run plans/demo.ron --results $(RESULTS) --devices cpu
	$(NORMLAB) report $(RESULTS)/demo.csv --out $(RESULTS)/demo-report --format both

reproduce: data
	$(NORMLAB_CUDA) run plans/paper.ron --results $(RESULTS) --devices cuda:0 --jobs-per-device $(JOBS_PER_DEVICE)
	$(NORMLAB) report $(RESULTS)/paper.csv --out $(RESULTS)/paper-report --format both

short: data
	$(NORMLAB_CUDA) run plans/short.ron --results $(RESULTS) --devices cuda:0 --jobs-per-device $(JOBS_PER_DEVICE)
	$(NORMLAB) report $(RESULTS)/short.csv --out $(RESULTS)/short-report --format both
