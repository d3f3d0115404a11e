package admin

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ReadToken returns the configured token, or the one in file.
func ReadToken(token, file string) (string, error) {
	if token != "" {
		return token, nil
	}
	if file == "" {
		return "", errors.New("admin: no admin_token or admin_token_file configured")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if t == "" {
		return "", fmt.Errorf("admin token file %s is empty", file)
	}
	return t, nil
}

// EnsureToken is ReadToken for `lifeline serve`: a missing token file is
// created with 32 random bytes, readable by the owner only, so that the admin
// API is never open and an administrator has nothing to set up.
func EnsureToken(token, file string) (string, error) {
	t, err := ReadToken(token, file)
	if err == nil || token != "" || file == "" || !errors.Is(err, os.ErrNotExist) {
		return t, err
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	t = hex.EncodeToString(b[:])
	if err := os.MkdirAll(filepath.Dir(file), 0o750); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	// O_EXCL: two daemons started at once must not write different tokens.
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return ReadToken("", file)
	}
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	if _, err := f.WriteString(t + "\n"); err != nil {
		return "", errors.Join(fmt.Errorf("admin token: %w", err), f.Close())
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return t, nil
}
