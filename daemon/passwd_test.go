package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/mailroomd/mailroomd/internal/waitfor"
)

// TestPasswdNeverEchoes types the password on a real terminal the moment
// each prompt appears: echo is already off by then, so the terminal shows
// nothing of it.
func TestPasswdNeverEchoes(t *testing.T) {
	master, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	defer tty.Close()
	var screen syncBuffer
	go io.Copy(&screen, master) // what the terminal displays (its echo)
	prompts, out := &syncBuffer{}, &syncBuffer{}
	code := make(chan int, 1)
	go func() { code <- passwd([]string{"clara"}, tty, out, prompts) }()
	const secret = "correct-horse-battery"
	for _, p := range []string{"Password: ", "Again: "} {
		waitfor.True(t, 5*time.Second, "the prompt "+p, func() bool { return strings.Count(prompts.String(), p) == 1 })
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO != 0 {
			t.Fatalf("echo is still on when %q is shown", p)
		}
		master.Write([]byte(secret + "\n"))
	}
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit %d: %s", c, prompts.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("passwd did not finish")
	}
	if !strings.Contains(out.String(), `password_hash: "$2a$`) {
		t.Fatalf("no hash printed: %q", out.String())
	}
	// ECHONL echoes each newline: once both arrived, anything echoed
	// before them has arrived too.
	waitfor.True(t, 5*time.Second, "both newlines echoed", func() bool { return strings.Count(screen.String(), "\n") >= 2 })
	if strings.Contains(screen.String(), "horse") {
		t.Fatalf("the terminal echoed the password: %q", screen.String())
	}
	tio, _ := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if tio.Lflag&unix.ECHO == 0 {
		t.Fatal("echo was not turned back on")
	}
}
