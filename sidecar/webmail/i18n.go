package webmail

import (
	"fmt"
	"net/http"
	"time"

	"golang.org/x/text/language"
)

// Languages: English (the fallback) and German, chosen from Accept-Language
// (RFC 9110 §12.5.4).
var (
	langTags    = []language.Tag{language.English, language.German}
	langMatcher = language.NewMatcher(langTags)
)

func pickLang(r *http.Request) string {
	tags, _, err := language.ParseAcceptLanguage(r.Header.Get("Accept-Language"))
	if err != nil || len(tags) == 0 {
		return "en"
	}
	_, i, conf := langMatcher.Match(tags...)
	if conf == language.No {
		return "en"
	}
	if base, _ := langTags[i].Base(); base.String() == "de" {
		return "de"
	}
	return "en"
}

// catalog holds every text of the pages. A key missing in German falls back
// to English; a key missing in English shows the key, which the tests catch.
var catalog = map[string]map[string]string{
	"en": {
		"title":            "Lifeline continuity mail",
		"login":            "Log in",
		"login.heading":    "Log in to your continuity mailbox",
		"user":             "User name (e-mail address)",
		"password":         "Password",
		"login.failed":     "Wrong user name or password.",
		"login.later":      "Logging in is not possible right now (too many attempts, or a server problem). Please try again in a few minutes.",
		"login.plaintext":  "This page must be opened over HTTPS.",
		"login.unusable":   "This mailbox cannot be served; please contact your administrator.",
		"login.notserving": "Your mailbox is not served here now.",
		"logout":           "Log out",
		"inbox":            "Inbox",
		"sent":             "Sent",
		"compose":          "Write",
		"admin":            "Administration",
		"search":           "Search",
		"search.heading":   "Search messages",
		"from":             "From",
		"to":               "To",
		"cc":               "Cc",
		"bcc":              "Bcc",
		"subject":          "Subject",
		"date":             "Date",
		"size":             "Size",
		"text":             "Text",
		"since":            "From date",
		"before":           "Until date",
		"any":              "Any field",
		"clear":            "Clear search",
		"unread":           "unread",
		"flagged":          "flagged",
		"attachment":       "has attachment",
		"no.messages":      "No messages.",
		"page":             "Page %d of %d",
		"newer":            "Newer",
		"older":            "Older",
		"messages":         "%d messages",
		"messages.one":     "1 message",
		"search.limited":   "The search stopped after reading %d MB of messages; some messages were not searched. Narrow the search (a sender, a date range).",
		"mark.read":        "Mark read",
		"mark.unread":      "Mark unread",
		"flag":             "Flag",
		"unflag":           "Remove flag",
		"delete":           "Delete",
		"reply":            "Reply",
		"replyall":         "Reply all",
		"forward":          "Forward",
		"download.eml":     "Download original (.eml)",
		"attachments":      "Attachments",
		"remote.blocked":   "Remote images in this message were blocked to protect your privacy.",
		"remote.show":      "Show images",
		"html.title":       "Message content",
		"back":             "Back to the list",
		"send":             "Send",
		"add.attachments":  "Attach files",
		"message.text":     "Message",
		"send.failed":      "Your message could not be sent",
		"send.failed.help": "The mail server refused it or could not be reached. Your text is below; you can try again.",
		"send.disabled":    "Sending is not configured on this server.",
		"send.ok":          "Your message was sent and saved in Sent.",
		"send.notsaved":    "Your message was sent, but it could not be saved in Sent.",
		"send.norcpt":      "Please enter at least one recipient.",
		"send.badaddr":     "This address is not valid: %s",
		"send.toolarge":    "The message with its attachments is too large.",
		"banner.outage":    "Your mailbox server is unavailable since %s. This is the continuity mailbox: you can read and send mail here until it is back.",
		"banner.recovery":  "Your mailbox server is back. Your mail is being given back to it; you will find it there shortly.",
		"error":            "Error",
		"notfound":         "This message does not exist or was deleted.",
		"forbidden":        "This request was refused. Reload the page and try again.",
		"internal":         "Something went wrong on the server. Please try again.",
		"expired":          "Your session has ended. Please log in again.",
		"admin.heading":    "Mailbox servers",
		"server":           "Server",
		"state":            "State",
		"state.outage":     "outage since %s",
		"state.ok":         "normal",
		"probe":            "Last probe",
		"backlog":          "Messages held",
		"oldest":           "oldest from %s",
		"replay":           "Giving back",
		"replay.progress":  "%d delivered, %d retrying, %d failed",
		"history":          "History",
		"outage.start":     "Start outage",
		"outage.end":       "End outage",
		"reason":           "Reason",
		"cause":            "Cause",
		"by":               "By",
		"outage.begun":     "outage begun",
		"outage.ended":     "outage ended",
		"skip":             "Skip to content",
		"actions":          "Message actions",
		"folders":          "Folders",
		"done":             "Done.",
	},
	"de": {
		"title":            "Lifeline Notfall-Postfach",
		"login":            "Anmelden",
		"login.heading":    "Am Notfall-Postfach anmelden",
		"user":             "Benutzername (E-Mail-Adresse)",
		"password":         "Passwort",
		"login.failed":     "Benutzername oder Passwort falsch.",
		"login.later":      "Die Anmeldung ist gerade nicht möglich (zu viele Versuche oder ein Serverproblem). Bitte versuchen Sie es in einigen Minuten erneut.",
		"login.plaintext":  "Diese Seite muss über HTTPS geöffnet werden.",
		"login.unusable":   "Dieses Postfach kann nicht bereitgestellt werden; bitte wenden Sie sich an Ihre Administration.",
		"login.notserving": "Ihr Postfach wird hier zurzeit nicht bereitgestellt.",
		"logout":           "Abmelden",
		"inbox":            "Posteingang",
		"sent":             "Gesendet",
		"compose":          "Schreiben",
		"admin":            "Verwaltung",
		"search":           "Suchen",
		"search.heading":   "Nachrichten suchen",
		"from":             "Von",
		"to":               "An",
		"cc":               "Kopie",
		"bcc":              "Blindkopie",
		"subject":          "Betreff",
		"date":             "Datum",
		"size":             "Größe",
		"text":             "Text",
		"since":            "Ab Datum",
		"before":           "Bis Datum",
		"any":              "Alle Felder",
		"clear":            "Suche zurücksetzen",
		"unread":           "ungelesen",
		"flagged":          "markiert",
		"attachment":       "mit Anhang",
		"no.messages":      "Keine Nachrichten.",
		"page":             "Seite %d von %d",
		"newer":            "Neuere",
		"older":            "Ältere",
		"messages":         "%d Nachrichten",
		"messages.one":     "1 Nachricht",
		"search.limited":   "Die Suche wurde nach %d MB gelesener Nachrichten beendet; nicht alle Nachrichten wurden durchsucht. Bitte schränken Sie die Suche ein (Absender, Zeitraum).",
		"mark.read":        "Als gelesen markieren",
		"mark.unread":      "Als ungelesen markieren",
		"flag":             "Markieren",
		"unflag":           "Markierung entfernen",
		"delete":           "Löschen",
		"reply":            "Antworten",
		"replyall":         "Allen antworten",
		"forward":          "Weiterleiten",
		"download.eml":     "Original herunterladen (.eml)",
		"attachments":      "Anhänge",
		"remote.blocked":   "Externe Bilder in dieser Nachricht wurden zum Schutz Ihrer Privatsphäre blockiert.",
		"remote.show":      "Bilder anzeigen",
		"html.title":       "Inhalt der Nachricht",
		"back":             "Zurück zur Liste",
		"send":             "Senden",
		"add.attachments":  "Dateien anhängen",
		"message.text":     "Nachricht",
		"send.failed":      "Ihre Nachricht konnte nicht gesendet werden",
		"send.failed.help": "Der Mailserver hat sie abgelehnt oder war nicht erreichbar. Ihr Text steht unten; Sie können es erneut versuchen.",
		"send.disabled":    "Das Senden ist auf diesem Server nicht eingerichtet.",
		"send.ok":          "Ihre Nachricht wurde gesendet und unter „Gesendet“ gespeichert.",
		"send.notsaved":    "Ihre Nachricht wurde gesendet, konnte aber nicht unter „Gesendet“ gespeichert werden.",
		"send.norcpt":      "Bitte geben Sie mindestens einen Empfänger an.",
		"send.badaddr":     "Diese Adresse ist ungültig: %s",
		"send.toolarge":    "Die Nachricht ist mit ihren Anhängen zu groß.",
		"banner.outage":    "Ihr Mailserver ist seit %s nicht erreichbar. Dies ist das Notfall-Postfach: Hier können Sie E-Mails lesen und senden, bis er wieder da ist.",
		"banner.recovery":  "Ihr Mailserver ist wieder da. Ihre E-Mails werden ihm gerade zurückgegeben; Sie finden sie in Kürze dort.",
		"error":            "Fehler",
		"notfound":         "Diese Nachricht gibt es nicht, oder sie wurde gelöscht.",
		"forbidden":        "Diese Anfrage wurde abgelehnt. Bitte laden Sie die Seite neu und versuchen Sie es erneut.",
		"internal":         "Auf dem Server ist ein Fehler aufgetreten. Bitte versuchen Sie es erneut.",
		"expired":          "Ihre Sitzung ist abgelaufen. Bitte melden Sie sich erneut an.",
		"admin.heading":    "Mailserver",
		"server":           "Server",
		"state":            "Zustand",
		"state.outage":     "Ausfall seit %s",
		"state.ok":         "normal",
		"probe":            "Letzte Prüfung",
		"backlog":          "Zurückgehaltene Nachrichten",
		"oldest":           "älteste vom %s",
		"replay":           "Rückgabe",
		"replay.progress":  "%d zugestellt, %d in Wiederholung, %d fehlgeschlagen",
		"history":          "Verlauf",
		"outage.start":     "Ausfall beginnen",
		"outage.end":       "Ausfall beenden",
		"reason":           "Grund",
		"cause":            "Ursache",
		"by":               "Durch",
		"outage.begun":     "Ausfall begonnen",
		"outage.ended":     "Ausfall beendet",
		"skip":             "Zum Inhalt springen",
		"actions":          "Aktionen",
		"folders":          "Ordner",
		"done":             "Erledigt.",
	},
}

// tr returns the text of key in lang, formatted with args when given.
func tr(lang, key string, args ...any) string {
	s, ok := catalog[lang][key]
	if !ok {
		if s, ok = catalog["en"][key]; !ok {
			s = key
		}
	}
	if len(args) > 0 {
		return fmt.Sprintf(s, args...)
	}
	return s
}

// formatTime formats t in the server's zone, the way each language writes it.
func formatTime(lang string, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	t = t.Local()
	if lang == "de" {
		return t.Format("02.01.2006 15:04")
	}
	return t.Format("2006-01-02 15:04")
}

// formatSize writes a byte count the way a mail program does.
func formatSize(lang string, n int64) string {
	var s string
	switch {
	case n < 1024:
		s = fmt.Sprintf("%d B", n)
	case n < 1024*1024:
		s = fmt.Sprintf("%.0f KB", float64(n)/1024)
	default:
		s = fmt.Sprintf("%.1f MB", float64(n)/(1024*1024))
		if lang == "de" {
			s = fmt.Sprintf("%.1f MB", float64(n)/(1024*1024))
			s = replaceDot(s)
		}
	}
	return s
}

func replaceDot(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' {
			b[i] = ','
		}
	}
	return string(b)
}
