// Package admin is Lifeline's admin API: a small JSON-over-HTTP interface on
// the loopback HTTP listener that the CLI (`lifeline status`, `lifeline outage`,
// `lifeline restore`) uses, because the journal belongs to the running daemon
// (Badger allows one process per directory).
//
// Every /v1/ request needs "Authorization: Bearer TOKEN" (RFC 6750 §2.1).
//
//	GET    /v1/status                 servers, outage state, custody backlog, replay progress,
//	                                  journal size and retention horizon
//	POST   /v1/outage/start           {"server","reason"}
//	POST   /v1/outage/end             {"server"}
//	GET    /v1/windows                maintenance windows
//	POST   /v1/windows                {"server","start","end","reason"}
//	DELETE /v1/windows/{id}
//	GET    /v1/transitions?server=N   the outage history, newest last
//	POST   /v1/restore                {"mailbox","since","until","folder","dry_run"}; streams
//	                                  NDJSON RestoreProgress lines, the last one with Done set
package admin

import "time"

// Status is what GET /v1/status returns.
type Status struct {
	Time    time.Time      `json:"time"`
	Servers []ServerStatus `json:"servers"`
	Windows []Window       `json:"windows"`
	// Journal is nil until the daemon has read the journal's statistics once
	// (right after start).
	Journal *JournalStatus `json:"journal,omitempty"`
}

// JournalStatus is the journal's size and retention horizon, as of Updated
// (the daemon refreshes them every 15 s: reading them walks the journal's
// directory).
type JournalStatus struct {
	Updated     time.Time `json:"updated"`
	Messages    int64     `json:"messages"`
	Mailboxes   int64     `json:"mailboxes"`
	BytesOnDisk int64     `json:"bytes_on_disk"`
	BytesRaw    int64     `json:"bytes_raw"` // sum of the messages' raw sizes
	// DiskFree and DiskSize are the journal's filesystem (df's Avail and
	// Size); 0 when unknown.
	DiskFree int64 `json:"disk_free"`
	DiskSize int64 `json:"disk_size"`
	// Oldest is the arrival of the oldest message kept; zero when empty.
	Oldest time.Time `json:"oldest,omitzero"`
	// Retention is the configured retention in seconds, and Horizon is now
	// minus it: the next sweep removes what arrived before Horizon, except
	// mail still in custody. After the wall clock stepped forward while
	// Lifeline ran, Horizon lags: it moves only as fast as time passes, until
	// a restart.
	Retention float64   `json:"retention_seconds"`
	Horizon   time.Time `json:"horizon"`
}

// ServerStatus is one mailbox server.
type ServerStatus struct {
	Name      string    `json:"name"`
	Outage    bool      `json:"outage"`
	Since     time.Time `json:"since,omitzero"`
	Cause     string    `json:"cause,omitempty"` // probe, operator, window
	Reason    string    `json:"reason,omitempty"`
	Manual    bool      `json:"manual"`
	Up        bool      `json:"up"` // the last probe round succeeded
	LastProbe time.Time `json:"last_probe,omitzero"`
	LastError string    `json:"last_error,omitempty"`

	Backlog int       `json:"backlog"`         // recipients in custody or retrying
	Oldest  time.Time `json:"oldest,omitzero"` // arrival of the oldest of them; zero when none
	Replay  Replay    `json:"replay"`
}

// Replay is a server's replay progress since its current run began.
type Replay struct {
	Running   bool      `json:"running"`
	Started   time.Time `json:"started,omitzero"`
	Delivered int64     `json:"delivered"`
	Retrying  int64     `json:"retrying"`
	Failed    int64     `json:"failed"`
}

// Window is a maintenance window.
type Window struct {
	ID     string    `json:"id,omitempty"`
	Server string    `json:"server"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Reason string    `json:"reason,omitempty"`
	Source string    `json:"source,omitempty"` // "config" or "api"
}

// Transition is one change of a server's outage state.
type Transition struct {
	Server string    `json:"server"`
	Time   time.Time `json:"time"`
	Outage bool      `json:"outage"`
	Cause  string    `json:"cause"`
	Reason string    `json:"reason,omitempty"`
	By     string    `json:"by,omitempty"`
}

// OutageRequest is the body of POST /v1/outage/start and /v1/outage/end.
type OutageRequest struct {
	Server string `json:"server"`
	Reason string `json:"reason,omitempty"`
}

// RestoreRequest is the body of POST /v1/restore.
type RestoreRequest struct {
	Mailbox string    `json:"mailbox"`
	Since   time.Time `json:"since,omitzero"`
	Until   time.Time `json:"until"` // zero: up to now
	Folder  string    `json:"folder,omitempty"`
	DryRun  bool      `json:"dry_run,omitempty"`
}

// RestoreProgress is one NDJSON line of a restore.
type RestoreProgress struct {
	Total     int    `json:"total"`     // messages selected
	Done      int    `json:"done"`      // messages handled so far
	Delivered int    `json:"delivered"` // accepted by the mailbox server
	Failed    int    `json:"failed"`
	Bytes     int64  `json:"bytes"`
	Last      string `json:"last,omitempty"` // the last message's subject or error
	Finished  bool   `json:"finished,omitempty"`
	Error     string `json:"error,omitempty"` // set on the final line when the restore stopped early
}

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
}
