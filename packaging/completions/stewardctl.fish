# fish completion for stewardctl(1): its commands and options, and the names of the services of
# the manager the command line talks to (`stewardctl list`, with the line's --control, else
# $STEWARD_CONTROL, else /run/steward/control); nothing when no manager answers.

function __stewardctl_services --description 'the services of the manager stewardctl talks to'
    set -l tokens (commandline -opc)
    set -l control
    set -l i 2
    while test $i -le (count $tokens)
        switch $tokens[$i]
            case --control
                set i (math $i + 1)
                test $i -le (count $tokens); and set control --control $tokens[$i]
            case '--control=*'
                set control --control (string replace -- --control= '' $tokens[$i])
        end
        set i (math $i + 1)
    end
    timeout 2 stewardctl $control list 2>/dev/null
end

complete -c stewardctl -f
# BEGIN GENERATED from ctl/src/args.rs by STEWARD_WRITE_MAN=1 cargo test -p stewardctl man_page
set -l commands status list start stop restart logs reload reexec shutdown poweroff reboot version import debug help
complete -c stewardctl -l control -r -F -d 'the manager\'s control socket (default: $STEWARD_CONTROL, else /run/steward/control)'
complete -c stewardctl -l json -d 'print JSON instead of text'
complete -c stewardctl -s h -l help -d 'show help (after a command: that command\'s)'
complete -c stewardctl -l version -d 'show the client\'s version'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a status -d 'show every service, or the named ones in detail'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a list -d 'print the name of every service, one per line'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a start -d 'start services'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a stop -d 'stop services'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a restart -d 'restart services'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a logs -d 'show a service\'s captured output'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a reload -d 're-read the config and apply the changes'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a reexec -d 'replace the manager with the steward binary now on disk'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a shutdown -d 'stop every service and make the manager exit'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a poweroff -d 'as PID 1: stop everything and power off'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a reboot -d 'as PID 1: stop everything and reboot'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a version -d 'show the client\'s and the manager\'s versions'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a import -d 'print a steward config for systemd unit files'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a debug -d 'for tests: make the manager panic, or stop its loop'
complete -c stewardctl -n "not __fish_seen_subcommand_from $commands" -a help -d 'show the list of commands, or a command\'s help'
complete -c stewardctl -n '__fish_seen_subcommand_from help' -a "$commands"
complete -c stewardctl -n '__fish_seen_subcommand_from status' -a '(__stewardctl_services)'
complete -c stewardctl -n '__fish_seen_subcommand_from start' -l no-block -d 'return at once, without waiting'
complete -c stewardctl -n '__fish_seen_subcommand_from start' -a '(__stewardctl_services)'
complete -c stewardctl -n '__fish_seen_subcommand_from stop' -l no-block -d 'return at once, without waiting'
complete -c stewardctl -n '__fish_seen_subcommand_from stop' -a '(__stewardctl_services)'
complete -c stewardctl -n '__fish_seen_subcommand_from restart' -l no-block -d 'return at once, without waiting'
complete -c stewardctl -n '__fish_seen_subcommand_from restart' -a '(__stewardctl_services)'
complete -c stewardctl -n '__fish_seen_subcommand_from logs' -s n -l lines -x -d 'only the last N lines; more than the manager keeps in memory are read from the files of log_dir'
complete -c stewardctl -n '__fish_seen_subcommand_from logs' -s f -l follow -d 'keep printing new lines until interrupted'
complete -c stewardctl -n '__fish_seen_subcommand_from logs' -a '(__stewardctl_services)'
complete -c stewardctl -n '__fish_seen_subcommand_from import' -l root -x -d 'the system the units belong to (default /)'
complete -c stewardctl -n '__fish_seen_subcommand_from import' -l unit-path -x -d 'also search DIR, before the system\'s directories (repeatable)'
# END GENERATED
