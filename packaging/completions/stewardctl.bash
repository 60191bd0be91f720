# bash completion for stewardctl(1): its commands and options, and the names of the services of
# the manager the command line talks to (`stewardctl list`, with the line's --control, else
# $STEWARD_CONTROL, else /run/steward/control); nothing when no manager answers.

# The services of the manager at control socket $1 (stewardctl's default when empty).
_stewardctl_services() {
    local control=()
    [[ -n $1 ]] && control=(--control "$1")
    timeout 2 stewardctl "${control[@]}" list 2>/dev/null
}

_stewardctl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]}
    local i word command='' control=''
    COMPREPLY=()
    # The command word and the control socket, from the words before the cursor. bash splits
    # `--control=PATH` at the '=' (it is in COMP_WORDBREAKS): three words.
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        case $word in
            --control)
                [[ ${COMP_WORDS[i + 1]} == = ]] && ((i++))
                ((i + 1 < COMP_CWORD)) && control=${COMP_WORDS[i + 1]}
                ((i++))
                ;;
            --control=*) control=${word#--control=} ;;
            -*) ;;
            *) [[ -z $command ]] && command=$word ;;
        esac
    done
    control=${control/#\~/$HOME}

    if [[ $prev == --control || ($prev == = && ${COMP_WORDS[COMP_CWORD - 2]} == --control) ]]; then
        [[ $cur == = ]] && cur=''
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        return
    fi

    local commands global_options value_options options='' names=0
    # BEGIN GENERATED from ctl/src/args.rs by STEWARD_WRITE_MAN=1 cargo test -p stewardctl man_page
    commands="status list start stop restart logs reload reexec shutdown poweroff reboot version import debug help"
    global_options="--control --json -h --help --version"
    value_options="--lines --root --unit-path -n"
    case $command in
        status) options="" names=1 ;;
        start) options="--no-block" names=1 ;;
        stop) options="--no-block" names=1 ;;
        restart) options="--no-block" names=1 ;;
        logs) options="-n --lines -f --follow" names=1 ;;
        import) options="--root --unit-path" names=0 ;;
    esac
    # END GENERATED

    for word in $value_options; do
        [[ $prev == "$word" ]] && return
    done
    if [[ -z $command ]]; then
        if [[ $cur == -* ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$global_options" -- "$cur")
        else
            mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
        fi
    elif [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$options $global_options" -- "$cur")
    elif [[ $command == help ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    elif ((names)); then
        mapfile -t COMPREPLY < <(compgen -W "$(_stewardctl_services "$control")" -- "$cur")
    fi
}

complete -F _stewardctl stewardctl
