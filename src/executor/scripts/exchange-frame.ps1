$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
# Import-PSSession's commands run in a module, which reads preferences from the global scope, not from this block:
# without these, an Exchange cmdlet's error would not stop the script, and a copy-status query that failed would
# print [] and read as a server with no active database copies.
$global:ErrorActionPreference = 'Stop'
$global:ProgressPreference = 'SilentlyContinue'
$global:WarningPreference = 'SilentlyContinue'
try {
    $session = New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri {connection_uri} -Authentication {authentication}
    try {
        Import-PSSession $session {commands} -DisableNameChecking -AllowClobber | Out-Null
        {body}
    } finally {
        Remove-PSSession $session
    }
    ConvertTo-Json -InputObject $result -Depth 4 -Compress
} catch {
    [Console]::Error.WriteLine(($_ | Out-String))
    exit 1
}
exit 0
