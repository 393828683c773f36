Invoke-Command -ComputerName {server} -ArgumentList {app_pool} -ScriptBlock {
    param($name)
    $ErrorActionPreference = 'Stop'
    Import-Module WebAdministration
    Restart-WebAppPool -Name $name
} | Out-Null
$result = [pscustomobject]@{ Server = {server}; AppPool = {app_pool}; Recycled = $true }
