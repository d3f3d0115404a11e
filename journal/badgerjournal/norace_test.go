//go:build !race

package badgerjournal

const raceEnabled = false
