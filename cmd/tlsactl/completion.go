package main

import (
	"fmt"
	"io"

	"github.com/urfave/cli/v2"
)

// completionFlag is the hidden flag of urfave/cli (App.EnableBashCompletion)
// that, given last, makes tlsactl print the words that may follow instead of
// running the command.
const completionFlag = "--generate-bash-completion"

// bashCompletion asks tlsactl itself for the candidates; it runs the words
// typed so far (never through eval) with --generate-bash-completion.
const bashCompletion = `# bash completion for tlsactl
# Install: tlsactl completion bash > /etc/bash_completion.d/tlsactl
#      or: source <(tlsactl completion bash)

_tlsactl_complete() {
  local cur opts
  local -a words
  COMPREPLY=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:COMP_CWORD}")
  words[0]="${words[0]/#\~/$HOME}"
  if [[ "$cur" == -* ]]; then
    opts=$("${words[@]}" "$cur" --generate-bash-completion 2>/dev/null)
  else
    opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "${opts}" -- "$cur"))
  return 0
}

complete -o bashdefault -o default -F _tlsactl_complete tlsactl
`

const zshCompletion = `#compdef tlsactl
# zsh completion for tlsactl
# Install: tlsactl completion zsh > "${fpath[1]}/_tlsactl"
#      or: source <(tlsactl completion zsh)

_tlsactl() {
  local -a opts req
  local cur
  cur=${words[CURRENT]}
  req=("${(@)words[1,CURRENT-1]}")
  req[1]=${~req[1]}
  if [[ "$cur" == -* ]]; then
    opts=("${(@f)$("${(@)req}" "$cur" --generate-bash-completion 2>/dev/null)}")
  else
    opts=("${(@f)$("${(@)req}" --generate-bash-completion 2>/dev/null)}")
  fi
  if [[ -n "${opts[1]}" ]]; then
    _describe 'values' opts
  else
    _files
  fi
}

if [[ "${funcstack[1]}" == "_tlsactl" ]]; then
  _tlsactl "$@"
else
  compdef _tlsactl tlsactl
fi
`

func createCompletion() *cli.Command {
	script := func(text func() (string, error)) cli.ActionFunc {
		return func(c *cli.Context) error {
			if c.NArg() > 0 {
				return badInput(fmt.Errorf("%s takes no arguments", c.Command.FullName()))
			}
			s, err := text()
			if err != nil {
				return err
			}
			_, err = io.WriteString(c.App.Writer, s)
			return err
		}
	}
	constant := func(s string) func() (string, error) { return func() (string, error) { return s, nil } }
	return &cli.Command{
		Name:  "completion",
		Usage: "print a shell completion script for bash, zsh or fish",
		Description: `The bash and zsh scripts ask tlsactl for the candidates (commands, subcommands,
flags) as you type; the fish script lists them, generated from this tlsactl.

EXIT CODES:
   0   printed
   2   bad input

EXAMPLES:
   source <(tlsactl completion bash)
   tlsactl completion bash > /etc/bash_completion.d/tlsactl
   tlsactl completion zsh > "${fpath[1]}/_tlsactl"
   tlsactl completion fish > ~/.config/fish/completions/tlsactl.fish`,
		Subcommands: []*cli.Command{
			{Name: "bash", Usage: "print the bash completion script", Action: script(constant(bashCompletion))},
			{Name: "zsh", Usage: "print the zsh completion script", Action: script(constant(zshCompletion))},
			{Name: "fish", Usage: "print the fish completion script", Action: script(func() (string, error) {
				// From a fresh definition: the running App carries the
				// help flags urfave/cli adds, which would come out twice.
				return newApp(nil, io.Discard, io.Discard).ToFishCompletion()
			})},
		},
	}
}
