package daemon

import (
	"crypto/tls"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/lifelinemail/lifeline/addrmap"
	"github.com/lifelinemail/lifeline/admin"
	"github.com/lifelinemail/lifeline/config"
	"github.com/lifelinemail/lifeline/journal"
	"github.com/lifelinemail/lifeline/sidecar/serving"
	"github.com/lifelinemail/lifeline/sidecar/userview"
	"github.com/lifelinemail/lifeline/sidecar/webmail"
	"github.com/lifelinemail/lifeline/sidecar/webmail/mailview"
)

// webmailOptions is what the webmail server is built from: the users' views
// and the login, serving rule and certificate it shares with IMAP and POP3,
// and the admin API's Control for the banner and the admin page.
type webmailOptions struct {
	Store      *userview.Store
	Journal    journal.Journal
	Auth       loginAuth
	Serving    *serving.Checker
	TLSConfig  *tls.Config // nil without [tls]
	Resolver   *addrmap.Map
	Control    admin.Control
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Panics     prometheus.Counter
}

// newWebmail builds the webmail server. As a mailServer its plain listener
// serves HTTP (to loopback clients only: a reverse proxy on the host) and its
// implicit-TLS listener HTTPS.
func newWebmail(cfg config.Webmail, o webmailOptions) (mailServer, error) {
	_, relay, err := config.SplitListen(cfg.SMTP)
	if err != nil {
		return nil, fmt.Errorf("webmail.smtp: %w", err)
	}
	srv, err := webmail.New(webmail.Options{
		Store: o.Store, Journal: o.Journal, Auth: o.Auth, Serving: o.Serving, Control: o.Control, Servers: o.Resolver,
		Admins: cfg.Admins,
		Relay: mailview.Relay{
			Addr: relay, Username: cfg.SMTPUser, Password: cfg.SMTPPassword, AllowPlaintext: cfg.SMTPAllowPlaintext,
		},
		TLSConfig: o.TLSConfig, Logger: o.Logger, Registerer: o.Registerer, Panics: o.Panics,
		SessionIdle: cfg.SessionIdle.D(), SessionMax: cfg.SessionMax.D(), MaxUpload: int64(cfg.MaxUpload),
	})
	if err != nil {
		return nil, err
	}
	return srv, nil
}
