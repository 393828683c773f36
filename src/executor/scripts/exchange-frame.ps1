$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
$WarningPreference = 'SilentlyContinue'
$InformationPreference = 'SilentlyContinue'
try {
    $session = New-PSSession -ConfigurationName Microsoft.Exchange -ConnectionUri {connection_uri} -Authentication {authentication}
    try {
        Import-PSSession $session -DisableNameChecking -AllowClobber | Out-Null
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
