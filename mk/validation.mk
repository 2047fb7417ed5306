# Scaled validation runs (docs/validation.md): 1 day, 1 week, 1 month of firehose-shaped data, each writing
# results/<run-id>/ (summary.json, REPORT.md, PNG plots, logs/) and pointing results/latest at it.
# Included by the Makefile, which defines VENV, BIN and PYTHON.
#
#   make validate-day   [SCALE=1] [TARGET=host|local] [RUN_ID=...]   real pipeline: simulator -> ingester -> Redis -> flush
#   make validate-week  [SCALE=1] [RUN_ID=...]                       generated straight into the flush's writer, here
#   make validate-month [SCALE=1] [RUN_ID=...]                       the same over 30 days
#   make validate-history [DAYS=365] [SCALE=0.005] [RUN_ID=...]     the same over DAYS days; search p50 vs days searched
#   make validate-catchup [HOURS=6] [RUN_ID=...]                     the ingester back from an outage of HOURS, here
#                                                                    (10 warm and 3 cold reps unless given)
#
# RESUME=1 with the RUN_ID of a week, month or history run that stopped early carries it on (its data was kept).
# PROFILE real = the 2026 network (45M events a day, its mix, texts, diurnal curve and bursts); seed = the seed
#         documents' 8.1M a day (docs/simulator.md, "Profiles")
# SCALE   fraction of the profile's events per simulated day (real: 45M; CI: SCALE=0.001, about 45k events)
# TARGET  host = the booted test host (`make host-up` first); local = the `make run` stack on private ports here.
#         The week and month runs always run here (the test host's 4 GiB volume does not hold them).
# Exit status: 0 correct (accounting exact; day: no hidden or doubled row served, the newest post found), 1 a
# correctness target failed, 2 the run could not be carried out. Speed targets are judged in REPORT.md only.

SCALE                   ?= 1
PROFILE                 ?= real
TARGET                  ?= host
RUN_ID                  ?=
VALIDATE_FLUSH_INTERVAL ?= 30
WARM_REPS               ?= 20
COLD_REPS               ?= 20
VALIDATE_ARGS           ?=
RESUME                  ?=
DAYS                    ?= 365
HOURS                   ?= 6
# validate-history's own defaults, unless SCALE, WARM_REPS or COLD_REPS are given on the command line
given = $(if $(filter command line environment,$(origin $(1))),$($(1)),$(2))

VALIDATE = $(PYTHON) -m tests.validation.harness
VALIDATE_RUN = $(if $(RUN_ID),--run-id '$(RUN_ID)') $(if $(RESUME),--resume)
VALIDATE_COMMON = --scale $(SCALE) --profile $(PROFILE) $(VALIDATE_RUN) --warm-reps $(WARM_REPS) \
  --cold-reps $(COLD_REPS) $(VALIDATE_ARGS)

.PHONY: validate-day validate-week validate-month validate-history validate-catchup test-validation

validate-day: deps venv ## 1 simulated day (45M x SCALE events; PROFILE=seed: 8.1M), real pipeline on TARGET=host|local
	$(VALIDATE) day --target $(TARGET) --flush-interval $(VALIDATE_FLUSH_INTERVAL) $(VALIDATE_COMMON)

validate-week: venv ## 7 simulated days (315M x SCALE events; PROFILE=seed: 56.7M) through the flush's writer here
	$(VALIDATE) week --target local $(VALIDATE_COMMON)

validate-month: venv ## 30 simulated days (1.35B x SCALE events; PROFILE=seed: 243M) through the flush's writer here
	$(VALIDATE) month --target local $(VALIDATE_COMMON)

validate-history: venv ## DAYS simulated days (default 365 at SCALE 0.005): search p50 against the days searched
	$(VALIDATE) history --target local --days $(DAYS) --scale $(call given,SCALE,0.005) --profile $(PROFILE) $(VALIDATE_RUN) \
	  --warm-reps $(call given,WARM_REPS,10) --cold-reps $(call given,COLD_REPS,3) $(VALIDATE_ARGS)

validate-catchup: deps venv ## the ingester back from a HOURS (6) h outage catches up with the live simulator, here
	$(VALIDATE) catchup --target local --hours $(HOURS) --profile $(PROFILE) $(VALIDATE_RUN) $(VALIDATE_ARGS)

test-validation: deps venv ## the validation harness's own checks (accounting, summary keys, a tiny local run)
	$(BIN)/pytest -q tests/validation
