# Metering: usage metering and limit enforcement over gRPC.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CONFIGURATION ?= Release
ADDRESS ?= http://127.0.0.1:50051
# Storage backend of make run: empty = embedded unless ConnectionStrings__Postgres/__Redis are set; or embedded, postgres-redis.
STORAGE ?=
BUF := node_modules/.bin/buf
FAULT_TABLE := TestResults/faults/reliability-table.md
LOAD_TABLE := TestResults/loadbench/performance-table.md
CALLERS ?= 64
SUBJECTS ?= 1000
SECONDS ?= 10
# PROFILE=1: make bench-load also traces the service per scenario (dotnet-trace) and writes the profile section instead of the table.
PROFILE ?=
PROFILE_REPORT := TestResults/loadbench/performance-profile.md
CLUSTER_FILTER ?= FullyQualifiedName!~RedisFailureTests&FullyQualifiedName!~RedisFailoverTests

.PHONY: help build run test test-unit test-integration test-faults test-client test-contract pack migrate api-key lint breaking proto-release format-check bench servers-up servers-down clean publish image smoke-publish deploy-check bench-load test-cluster

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

build: ## Build every project (warnings are errors)
	dotnet build Metering.sln -c $(CONFIGURATION)

run: ## Serve on 127.0.0.1:50051 on the embedded storage (STORAGE=postgres-redis: local PostgreSQL and Redis, started when none are configured)
	STORAGE="$(STORAGE)" deploy/local/run.sh $(ADDRESS) -c $(CONFIGURATION)

test: $(BUF) lint breaking ## Lint the protos and check them against the released contract, then run every test: unit, integration (real PostgreSQL and Redis), end-to-end
	rm -rf tests/*/TestResults/*.trx
	dotnet test Metering.sln -c $(CONFIGURATION) --filter "TestCategory!=Faults" --logger trx \
	  || { node deploy/ci/failed-tests.mjs tests; exit 1; }

test-unit: ## Run the unit tests only (no servers needed): the domain and the Redis script protocol
	dotnet test tests/Metering.Core.Tests -c $(CONFIGURATION)
	dotnet test tests/Metering.Storage.Redis.Tests -c $(CONFIGURATION)

test-integration: $(BUF) ## Run the integration and end-to-end tests only
	dotnet test tests/Metering.IntegrationTests -c $(CONFIGURATION)

test-faults: ## Fault injection on real processes (PostgreSQL, Redis, two instances); the table goes into docs/reliability.md
	dotnet test tests/Metering.FaultTests -c $(CONFIGURATION) --logger "console;verbosity=normal"; status=$$?; \
	if [ -f $(FAULT_TABLE) ]; then \
	  awk -v table=$(FAULT_TABLE) '/<!-- fault-table:start -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next } \
	    /<!-- fault-table:end -->/ { skip = 0 } !skip { print }' docs/reliability.md > docs/reliability.md.new && mv docs/reliability.md.new docs/reliability.md; \
	fi; exit $$status
test-client: ## Run the .NET client's tests only (the real server process, PostgreSQL and Redis)
	dotnet test tests/Metering.Client.Tests -c $(CONFIGURATION)

test-contract: ## Run the storage conformance suite only: every port contract against every backend (BACKEND=embedded: that one only)
	dotnet test tests/Metering.Storage.Contract -c $(CONFIGURATION) $(if $(BACKEND),--filter "TestCategory=$(BACKEND)")

pack: ## Pack the .NET client library (Metering.Client) into artifacts/packages
	dotnet pack src/Metering.Client -c $(CONFIGURATION) -o artifacts/packages

migrate: ## Apply the database migrations to ConnectionStrings__Postgres (or the local server) and exit
	STORAGE="$(or $(STORAGE),postgres-redis)" deploy/local/run.sh migrate -c $(CONFIGURATION)

api-key: ## Print a new API key and its configuration: make api-key NAME=chat SCOPES="metering.track"
	@test -n "$(NAME)" -a -n "$(SCOPES)" || { echo 'usage: make api-key NAME=<caller> SCOPES="metering.check metering.track metering.read metering.admin"' >&2; exit 2; }
	@dotnet run --project src/Metering.Server -c $(CONFIGURATION) -v quiet -- api-key $(NAME) $(SCOPES)

lint: $(BUF) ## Lint the protos (buf STANDARD rules)
	cd protos && ../$(BUF) lint

breaking: $(BUF) ## Check the protos against the released contract (protos/released.binpb): no wire-breaking change
	cd protos && ../$(BUF) breaking --against released.binpb

proto-release: $(BUF) ## Record the current protos as the released contract that make breaking checks against
	cd protos && ../$(BUF) build -o released.binpb

format-check: ## Check that every file is formatted as .editorconfig says (dotnet format --verify-no-changes)
	dotnet format Metering.sln --verify-no-changes

servers-up: ## Start the local PostgreSQL and Redis used by make run
	deploy/local/servers.sh start

servers-down: ## Stop the local PostgreSQL and Redis
	deploy/local/servers.sh stop

bench: ## Measure the hot and write paths on real servers, as ratios to bare Redis and PostgreSQL round trips
	dotnet run -c Release --project bench/Metering.Benchmarks

bench-load: ## Closed-loop load on the Release server (CALLERS=64 SUBJECTS=1000 SECONDS=10) beside same-run references; the table goes into docs/performance.md (PROFILE=1: a CPU profile per scenario goes there instead)
	dotnet build src/Metering.Server -c Release
	dotnet build bench/Metering.LoadBench -c Release
	rm -f $(LOAD_TABLE)
ifeq ($(PROFILE),1)
	dotnet tool restore
	rm -f $(PROFILE_REPORT)
	dotnet bench/Metering.LoadBench/bin/Release/net10.0/Metering.LoadBench.dll --callers $(CALLERS) --subjects $(SUBJECTS) --seconds $(SECONDS) --table $(LOAD_TABLE) --profile $(PROFILE_REPORT); status=$$?; \
	if [ -f $(PROFILE_REPORT) ]; then \
	  awk -v table=$(PROFILE_REPORT) '/<!-- profile:start -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next } \
	    /<!-- profile:end -->/ { skip = 0 } !skip { print }' docs/performance.md > docs/performance.md.new && mv docs/performance.md.new docs/performance.md; \
	fi; exit $$status
else
	dotnet bench/Metering.LoadBench/bin/Release/net10.0/Metering.LoadBench.dll --callers $(CALLERS) --subjects $(SUBJECTS) --seconds $(SECONDS) --table $(LOAD_TABLE); status=$$?; \
	if [ $$status -eq 0 ] && [ -f $(LOAD_TABLE) ]; then \
	  awk -v table=$(LOAD_TABLE) '/<!-- load-table:start -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next } \
	    /<!-- load-table:end -->/ { skip = 0 } !skip { print }' docs/performance.md > docs/performance.md.new && mv docs/performance.md.new docs/performance.md; \
	fi; exit $$status
endif

test-cluster: $(BUF) ## Start a local 3-primary Redis Cluster and run the integration tests against it (METERING_TEST_REDIS)
	dotnet build tests/Metering.IntegrationTests -c $(CONFIGURATION)
	redis=$$(deploy/local/redis-cluster.sh start) || { deploy/local/redis-cluster.sh stop; exit 1; }; \
	METERING_TEST_REDIS="$$redis" dotnet test tests/Metering.IntegrationTests -c $(CONFIGURATION) --no-build --filter "$(CLUSTER_FILTER)"; status=$$?; \
	deploy/local/redis-cluster.sh stop; exit $$status

PUBLISH_DIR ?= artifacts/publish/metering
TARBALL ?= artifacts/metering-linux-x64.tar.gz
IMAGE ?= metering:dev

publish: ## Self-contained release build (linux-x64) and its tarball in artifacts/
	rm -rf $(PUBLISH_DIR)
	deploy/publish.sh $(PUBLISH_DIR)
	tar -C $(dir $(PUBLISH_DIR)) -czf $(TARBALL) $(notdir $(PUBLISH_DIR))
	@echo "$(TARBALL): run ./metering/Metering.Server (needs no .NET install)"

image: ## Build the container image metering:dev (IMAGE=...; needs a container engine: docker or podman)
	$(or $(shell command -v docker 2>/dev/null),$(shell command -v podman 2>/dev/null),$(error no docker or podman found)) \
	  build -f deploy/docker/Dockerfile -t $(IMAGE) .

smoke-publish: $(BUF) publish ## Start the published tarball on local PostgreSQL and Redis: migrate, health, one CheckLimit, SIGTERM
	deploy/ci/smoke-publish.sh $(TARBALL)

deploy-check: $(BUF) ## Render the Kustomize overlays and check them, the compose file and the dashboard against their schemas (offline)
	node deploy/ci/check-deploy.mjs

clean: ## Remove build output
	dotnet clean Metering.sln -c $(CONFIGURATION)

$(BUF): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(BUF)
