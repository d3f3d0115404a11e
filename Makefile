# Lifeline. `make run` starts it with the example config; `make test` runs
# every test (the end-to-end tests start private Postfix and Dovecot instances
# and, as root, install them from Debian's packages when missing).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
FUZZTIME ?= 20s
export GO

.PHONY: all build run test test-short bench fuzz vet capacity faults clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/lifeline ./cmd/lifeline

run: build
	mkdir -p var
	./bin/lifeline serve -c contrib/lifeline.example.toml

# Everything, with the race detector (the e2e package starts Postfix and
# Dovecot; see e2e/README.md).
test: vet
	$(GO) test -race -count=1 -timeout 25m ./...

# Unit tests only (no Postfix, no Dovecot).
test-short:
	$(GO) test -race -short -count=1 ./...

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Benchmarks, each printed beside its baseline: journal appends against the
# disk's own write+fsync rate, then Postfix -> Dovecot throughput with the
# milter against without it, fetching a 10,000-message mailbox over IMAP from
# Lifeline against from Dovecot, and giving 5,000 held messages back to
# Dovecot against Postfix's own LMTP delivery of them (needs root: it starts
# Postfix and Dovecot), and journal bytes on disk per byte of mail.
# docs/benchmarks.md holds the figures of one run.
bench:
	$(GO) test -run '^$$' -bench '^BenchmarkAppend$$' -benchtime 2000x ./journal/...
	$(GO) test -run '^$$' -bench '^BenchmarkAppend50MB$$' -benchtime 3x ./journal/...
	$(GO) test -run '^$$' -bench '^BenchmarkOpen$$' -benchtime 50000x -v ./journal/badgerjournal | grep -E '^Benchmark.*op|ratio'
	$(GO) test -run '^$$' -bench '^BenchmarkReadItems$$' -benchtime 20x -v ./journal/badgerjournal | grep -E '^Benchmark.*op|ratio'
	$(GO) test -run '^$$' -bench '^BenchmarkMessage$$' -benchtime 5000x -v ./milter | grep -E '^Benchmark.*op|CPU per'
	$(GO) test -run '^$$' -bench '^BenchmarkRestart$$' -benchtime 3x -timeout 60m ./journal/badgerjournal
	$(GO) test -run '^$$' -bench '^Benchmark(Parse|Copy)$$' ./mimestruct
	$(GO) test -run '^$$' -bench '^BenchmarkParse$$' -benchmem ./sidecar/webmail/mailview
	$(GO) test -run '^$$' -bench '^Benchmark(ListPage|SearchPage)$$' -benchtime 200x ./sidecar/webmail
	$(GO) test -run '^$$' -bench '^BenchmarkIngest' ./ingest
	$(GO) run ./e2e/mtabench $(BENCHFLAGS)
	$(GO) run ./e2e/imapbench $(IMAPBENCHFLAGS)
	$(GO) run ./e2e/replaybench -pairs 3 -count 5000 -in-flow-delay 0s $(REPLAYBENCHFLAGS)
	LIFELINE_CAPACITY_N=3000 $(GO) test -count=1 -v -run '^TestCapacityJournal$$' ./e2e/

# Run every fuzz target for FUZZTIME each (.ci/fuzz: a failure is one with a
# failing input); FUZZFLAGS adds go test flags, e.g. -fuzzminimizetime=2s.
fuzz:
	.ci/fuzz FuzzSummary ./journal $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzRebuild ./milter $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParseAliases ./addrmap $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParse ./config $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzRecord ./journal/badgerjournal $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzChunk ./journal/badgerjournal $(FUZZTIME) -fuzzminimizetime 1x $(FUZZFLAGS)
	.ci/fuzz FuzzSession ./sidecar/pop3 $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzSession ./sidecar/imap $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzMatcher ./sidecar/imap $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzCanonical ./sidecar/userview $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParseLine ./auth $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzVerifyHash ./auth $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParse ./mimestruct $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzUnmarshal ./mimestruct $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParse ./sidecar/webmail/mailview $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzHeaderLimiter ./internal/headerlimit $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzParseRef ./sidecar/webmail $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzQuery ./sidecar/webmail $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzPolicyRequest ./policy $(FUZZTIME) $(FUZZFLAGS)
	.ci/fuzz FuzzIngestSession ./ingest $(FUZZTIME) -fuzzminimizetime 1x $(FUZZFLAGS)
	.ci/fuzz FuzzMetricNames ./e2e $(FUZZTIME) $(FUZZFLAGS)

# The fault-injection suite in its long form (make test runs the short one):
# SIGKILLs, Dovecot restarts, LMTP 451s, a full journal disk, Postfix restarts.
faults:
	LIFELINE_FAULTS_LONG=1 $(GO) test -race -count=1 -timeout 60m -run '^TestFault' -v ./e2e/

# Journal bytes on disk and memory for N typical messages (docs/operations.md).
capacity:
	LIFELINE_CAPACITY_N=3000 $(GO) test -count=1 -v -run '^TestCapacity' ./e2e/

clean:
	rm -rf bin var
