package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is a child that the harness started and must stop: its output goes
// to a file (never a pipe: Dovecot's master keeps the descriptors it was
// started with, so a pipe read to EOF would wait forever), and Wait runs in a
// goroutine so that a crash during start-up is seen at once.
type process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done is closed

	stopOnce sync.Once
	stopErr  error
}

// startProcess starts argv with stdout and stderr appended to logPath.
func startProcess(name, logPath string, env []string, argv ...string) (*process, error) {
	out, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.Env = env
	// Its own process group: a ^C in the terminal goes to the test binary,
	// which then stops the child through the cleanups. If the test binary
	// dies without cleanups (a -timeout panic), the kernel sends SIGTERM.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid is the child's process id.
func (p *process) Pid() int { return p.cmd.Process.Pid }

// exited reports whether the child has ended, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		if p.err == nil {
			return true, fmt.Errorf("%s exited", p.name)
		}
		return true, fmt.Errorf("%s exited: %w", p.name, p.err)
	default:
		return false, nil
	}
}

// stop sends SIGTERM and waits up to grace for the child to end, then kills
// it. It returns the child's exit error unless that is the SIGTERM itself.
func (p *process) stop(grace time.Duration) error {
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
		default:
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
				p.stopErr = fmt.Errorf("SIGTERM %s: %w", p.name, err)
			}
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-p.done:
			case <-t.C:
				_ = p.cmd.Process.Kill()
				<-p.done
				p.stopErr = fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, grace)
				return
			}
		}
		if p.err != nil && p.stopErr == nil {
			var ee *exec.ExitError
			if errors.As(p.err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM {
					return
				}
			}
			p.stopErr = fmt.Errorf("%s: %w", p.name, p.err)
		}
	})
	return p.stopErr
}
