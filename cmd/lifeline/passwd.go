package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/lifelinemail/lifeline/auth"
)

// cmdPasswd prints a passwd-file hash of a password, as `doveadm pw` does:
// "{SCHEME}hash", or a whole "user:{SCHEME}hash" line with --user.
func cmdPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scheme := fs.String("scheme", auth.DefaultScheme, "password scheme: "+strings.Join(auth.HashSchemes(), ", "))
	fromStdin := fs.Bool("stdin", false, "read the password from the first line of standard input, without a prompt")
	user := fs.String("user", "", "print a whole passwd-file line for this user (an address)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user != "" && strings.ContainsFunc(*user, func(r rune) bool { return r <= ' ' || r == ':' || r == 0x7f }) {
		return usageError{fmt.Errorf("passwd: --user %q: a user name cannot contain ':', blanks or control characters", *user)}
	}
	var (
		pw  string
		err error
	)
	if *fromStdin {
		pw, err = readPasswordLine(bufio.NewReader(stdin))
	} else {
		pw, err = promptPassword(stdin, stderr)
	}
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	h, err := auth.Hash(*scheme, pw)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	if *user != "" {
		fmt.Fprintf(stdout, "%s:%s\n", *user, h)
	} else {
		fmt.Fprintln(stdout, h)
	}
	return nil
}

// readPasswordLine reads one line; its line end is not part of the password.
func readPasswordLine(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", errors.New("no password on standard input")
		}
		return "", err
	}
	line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if line == "" {
		return "", errors.New("empty password")
	}
	return line, nil
}

// promptPassword asks for the password twice on the terminal, with echo off.
// Echo is switched with stty(1) rather than a terminal library, to keep the
// binary's dependencies to what it already has.
func promptPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	tty, ok := stdin.(*os.File)
	if !ok || !isTerminal(tty) {
		return "", usageError{errors.New("standard input is not a terminal: give the password on standard input with --stdin")}
	}
	restore, err := echoOff(tty)
	if err != nil {
		// /dev/null is a character device too: stty is the real test.
		return "", usageError{fmt.Errorf("standard input is not a terminal whose echo can be turned off (%w): give the password on standard input with --stdin", err)}
	}
	// Ctrl-C while echo is off must not leave the terminal without echo.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			restore() //nolint:errcheck // exiting anyway
			fmt.Fprintln(stderr)
			os.Exit(130)
		case <-done:
		}
	}()
	defer func() {
		signal.Stop(sig)
		close(done)
	}()
	r := bufio.NewReader(tty)
	fmt.Fprint(stderr, "Enter new password: ")
	pw, err := readPasswordLine(r)
	fmt.Fprintln(stderr)
	if err == nil {
		fmt.Fprint(stderr, "Retype new password: ")
		var again string
		again, err = readPasswordLine(r)
		fmt.Fprintln(stderr)
		if err == nil && again != pw {
			err = errors.New("the passwords do not match")
		}
	}
	if rerr := restore(); rerr != nil {
		err = errors.Join(err, fmt.Errorf("restoring the terminal: %w", rerr))
	}
	return pw, err
}

func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// echoOff turns the terminal's echo off and returns a function that puts the
// settings back as they were.
func echoOff(tty *os.File) (restore func() error, err error) {
	stty := func(args ...string) (string, error) {
		cmd := exec.Command("stty", args...)
		cmd.Stdin = tty
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				err = fmt.Errorf("stty %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(ee.Stderr)))
			}
			return "", err
		}
		return strings.TrimSpace(string(out)), nil
	}
	saved, err := stty("-g")
	if err != nil {
		return nil, err
	}
	if _, err := stty("-echo"); err != nil {
		return nil, err
	}
	return func() error { _, err := stty(saved); return err }, nil
}
