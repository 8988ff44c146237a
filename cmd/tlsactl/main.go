// Command tlsactl computes, checks and maintains DANE TLSA records for mail
// servers (RFC 6698, RFC 7671, RFC 7672), following the NCSC procedure of a
// "3 1 1" plus a "2 1 1" record per MX host.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Exit codes shared by all commands. Commands that report a verdict (match,
// check) use 0/1 for the verdict and 2 for bad input; see each --help.
const (
	exitOK       = 0
	exitNoMatch  = 1
	exitBadInput = 2
)

// exitError carries an exit code with an error message for stderr.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// badInput wraps err as a bad-input error (exit 2).
func badInput(err error) error { return &exitError{code: exitBadInput, err: err} }

// silentExit ends a command with code and nothing more on stderr.
type silentExit int

func (s silentExit) Error() string { return fmt.Sprintf("exit %d", int(s)) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is the whole program: it parses args, runs the command and returns the
// exit code. It writes only to stdout and stderr.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	if len(args) < 2 || args[len(args)-1] != completionFlag {
		// Completion requests are left as typed: urfave/cli wants the
		// flag last and no "--" before it.
		args = permuteArgs(args, app)
	}
	err := app.RunContext(ctx, args)
	closeStores()
	if err == nil {
		return exitOK
	}
	var s silentExit
	if errors.As(err, &s) {
		return int(s)
	}
	fmt.Fprintf(stderr, "tlsactl: %s\n", oneLine(err.Error()))
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return exitBadInput
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	onUsageError := func(_ *cli.Context, err error, _ bool) error {
		return badInput(fmt.Errorf("%w (see --help)", err))
	}
	app := &cli.App{
		Name:  "tlsactl",
		Usage: "keep DANE TLSA records of mail servers correct through renewals and CA changes",
		Description: `tlsactl computes TLSA records (a drop-in for hash-slinger's "tlsa --create"),
checks a served certificate chain against a TLSA RRset with the SMTP rules of RFC 7672,
and follows the NCSC procedure: a "3 1 1" (server key) and a "2 1 1" (issuing CA key)
record under _25._tcp.<mx-host>, of which at least one must match at every moment.`,
		Version:                   readVersion().Version,
		EnableBashCompletion:      true,
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		HideHelpCommand:           true,
		DisableSliceFlagSeparator: true,
		Suggest:                   true,
		ExitErrHandler:            func(*cli.Context, error) {},
		OnUsageError:              onUsageError,
		Commands: []*cli.Command{
			createCreate(),
			createMatch(),
			createCheck(),
			createPublish(),
			createRollover(),
			createHook(),
			createKey(),
			createACME(),
			createMigration(),
			createState(),
			createServe(),
			createVersion(),
			createMan(),
			createCompletion(),
		},
	}
	for _, c := range app.Commands {
		c.OnUsageError = onUsageError
		for _, sub := range c.Subcommands {
			sub.OnUsageError = onUsageError
		}
	}
	return app
}

// permuteArgs moves positional arguments of a subcommand behind its flags, so
// that hash-slinger habits such as `create mail.example.nl --usage 2` work:
// urfave/cli stops reading flags at the first positional argument.
func permuteArgs(args []string, app *cli.App) []string {
	if len(args) < 3 {
		return args
	}
	cmd, head := findCommand(app.Commands, args[1]), 2
	if cmd != nil && len(cmd.Subcommands) > 0 {
		// A command with subcommands (rollover, migration): the flags
		// belong to the subcommand named next; they are moved within its
		// arguments (`migration plan FILE --json`), never before its name.
		// A command with an action of its own too (check, whose subcommand
		// is outbound) permutes its own arguments when no subcommand is
		// named (`check example.nl --json`).
		if sub := findCommand(cmd.Subcommands, args[2]); sub != nil || cmd.Action == nil {
			if len(args) < 4 {
				return args
			}
			cmd, head = sub, 3
		}
	}
	if cmd == nil || (head == 3 && len(cmd.Subcommands) > 0) {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, pos []string
	rest := args[head:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			pos = append(pos, rest[i+1:]...)
			i = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				flags = append(flags, rest[i+1])
				i++
			}
		default:
			pos = append(pos, a)
		}
	}
	out := append(slices.Clone(args[:head]), flags...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}

// findCommand returns the command of cmds named name (or an alias), or nil.
func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name || contains(c.Aliases, name) {
			return c
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
