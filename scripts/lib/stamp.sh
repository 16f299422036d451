# Rebuild-avoidance for the plugin builds that have no incremental build of
# their own (componentize-py, jco): a stamp file next to each output holds
# the hash of everything the output was built from. Sourced, not run.

# The hash of a tool version string and every file under the given files
# and folders (caches such as __pycache__ and node_modules left out).
inputs_hash() {
    local tool_version=$1
    shift
    {
        printf '%s\n' "$tool_version"
        find "$@" -type f -not -path '*/__pycache__/*' -not -path '*/node_modules/*' -print0 |
            LC_ALL=C sort -z | xargs -0 sha256sum
    } | sha256sum | cut -d' ' -f1
}

stamp_path() {
    printf '%s/.%s.stamp\n' "$(dirname "$1")" "$(basename "$1" .wasm)"
}

# Whether `output` exists and was built from inputs with hash `hash`.
up_to_date() {
    local output=$1 hash=$2 stamp
    stamp=$(stamp_path "$output")
    [[ -f $output && -f $stamp && $(<"$stamp") == "$hash" ]]
}

record_stamp() {
    printf '%s\n' "$2" >"$(stamp_path "$1")"
}
