package e2e

import (
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBuilt()
	os.Exit(code)
}

// requireE2E skips end-to-end tests under -short, and skips (or, with
// CI=true, fails) them when Postfix and Dovecot cannot run here.
func requireE2E(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: skipped under -short (runs real Postfix, Dovecot and lifeline)")
	}
	Require(t)
}
