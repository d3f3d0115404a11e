# Lifeline. `make run` starts it with the example config; `make test` runs
# every test (the end-to-end tests start private Postfix and Dovecot instances
# and, as root, install them from Debian's packages when missing).

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)
LDFLAGS := -X main.version=$(VERSION)
FUZZTIME ?= 20s

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
	$(GO) test -run '^$$' -bench '^BenchmarkRestart$$' -benchtime 3x -timeout 60m ./journal/badgerjournal
	$(GO) test -run '^$$' -bench '^Benchmark(Parse|Copy)$$' ./mimestruct
	$(GO) test -run '^$$' -bench '^BenchmarkParse$$' -benchmem ./sidecar/webmail/mailview
	$(GO) test -run '^$$' -bench '^Benchmark(ListPage|SearchPage)$$' -benchtime 200x ./sidecar/webmail
	$(GO) test -run '^$$' -bench '^BenchmarkIngest' ./ingest
	$(GO) run ./e2e/mtabench $(BENCHFLAGS)
	$(GO) run ./e2e/imapbench $(IMAPBENCHFLAGS)
	$(GO) run ./e2e/replaybench -pairs 3 -count 5000 -in-flow-delay 0s $(REPLAYBENCHFLAGS)
	LIFELINE_CAPACITY_N=3000 $(GO) test -count=1 -v -run '^TestCapacityJournal$$' ./e2e/

# Run every fuzz target for FUZZTIME each.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzSummary$$' -fuzztime $(FUZZTIME) ./journal
	$(GO) test -run '^$$' -fuzz '^FuzzRebuild$$' -fuzztime $(FUZZTIME) ./milter
	$(GO) test -run '^$$' -fuzz '^FuzzParseAliases$$' -fuzztime $(FUZZTIME) ./addrmap
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./config
	$(GO) test -run '^$$' -fuzz '^FuzzRecord$$' -fuzztime $(FUZZTIME) ./journal/badgerjournal
	$(GO) test -run '^$$' -fuzz '^FuzzChunk$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1x ./journal/badgerjournal
	$(GO) test -run '^$$' -fuzz '^FuzzSession$$' -fuzztime $(FUZZTIME) ./sidecar/pop3
	$(GO) test -run '^$$' -fuzz '^FuzzSession$$' -fuzztime $(FUZZTIME) ./sidecar/imap
	$(GO) test -run '^$$' -fuzz '^FuzzParseLine$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyHash$$' -fuzztime $(FUZZTIME) ./auth
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./mimestruct
	$(GO) test -run '^$$' -fuzz '^FuzzUnmarshal$$' -fuzztime $(FUZZTIME) ./mimestruct
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./sidecar/webmail/mailview
	$(GO) test -run '^$$' -fuzz '^FuzzParseRef$$' -fuzztime $(FUZZTIME) ./sidecar/webmail
	$(GO) test -run '^$$' -fuzz '^FuzzQuery$$' -fuzztime $(FUZZTIME) ./sidecar/webmail
	$(GO) test -run '^$$' -fuzz '^FuzzPolicyRequest$$' -fuzztime $(FUZZTIME) ./policy
	$(GO) test -run '^$$' -fuzz '^FuzzIngestSession$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 1x ./ingest
	$(GO) test -run '^$$' -fuzz '^FuzzMetricNames$$' -fuzztime $(FUZZTIME) ./e2e

# The fault-injection suite in its long form (make test runs the short one):
# SIGKILLs, Dovecot restarts, LMTP 451s, a full journal disk, Postfix restarts.
faults:
	LIFELINE_FAULTS_LONG=1 $(GO) test -race -count=1 -timeout 60m -run '^TestFault' -v ./e2e/

# Journal bytes on disk and memory for N typical messages (docs/operations.md).
capacity:
	LIFELINE_CAPACITY_N=3000 $(GO) test -count=1 -v -run '^TestCapacity' ./e2e/

clean:
	rm -rf bin var
