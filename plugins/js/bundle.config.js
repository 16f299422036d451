// Rolldown settings for `jco componentize --bundle`: the contract's
// interfaces (`sluice:plugin/...`) are provided by the host at run time, so
// they stay imports instead of being looked up on disk.
export default { external: [/^sluice:plugin\//] };
