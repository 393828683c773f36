$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
try {
    {body}
    ConvertTo-Json -InputObject $result -Depth 4 -Compress
} catch {
    [Console]::Error.WriteLine(($_ | Out-String))
    exit 1
}
exit 0
