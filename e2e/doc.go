// Package e2e is Lifeline's end-to-end harness: it runs the real Postfix and
// Dovecot from Debian's packages, and the real lifeline binary, each on free
// loopback ports with private configuration, queue and data directories under a
// temporary directory, and drives them with real SMTP clients.
//
// Every end-to-end test and the MTA benchmark (e2e/mtabench) use it:
//
//	env := e2e.Start(t, e2e.Options{Milter: true, Users: []string{"alice", "bob"}})
//	ledger := e2e.NewLedger()
//	id := ledger.NewID()
//	_, err := e2e.Send(ctx, env.Postfix.SMTPAddr, e2e.Mail{
//		From: "sender@example.net", To: []string{env.Addr("alice")}, Data: e2e.WithTestID(id, body)})
//	ledger.Expect(id, env.Addr("alice"))
//	report := env.WaitDelivered(t, ledger, 2*time.Minute) // missing, duplicate, unexpected ids per mailbox
//	env.Lifeline.Stop()                                   // the journal commands open the journal directly
//	out, err := env.Lifeline.Verify(ctx)
//
// Readiness is always polled with a deadline, never slept for. Each component
// writes its log to a file; when the test has failed those logs are copied into
// the test output. Everything started is stopped by the test's cleanups.
//
// The harness takes a TB (Logf, Fatalf, Cleanup, …), which *testing.T and
// *testing.B satisfy, and which Main provides for programs such as the benchmark.
//
// It needs root: Postfix's master and Dovecot drop privileges themselves, and
// missing Debian packages are installed with apt-get. Without root, Require
// skips the test with a message that names the packages, except when CI=true,
// where a missing component fails the run.
package e2e
