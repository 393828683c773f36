Invoke-Command -ComputerName {server} -Authentication {authentication} -ArgumentList (,[string[]]@({app_pool})) -ScriptBlock {
    param([string[]]$names)
    $ErrorActionPreference = 'Stop'
    Import-Module WebAdministration
    foreach ($name in $names) {
        # A stopped pool cannot be recycled (IIS answers 0x800710D8); starting it is what recycling would achieve.
        if ((Get-WebAppPoolState -Name $name).Value -eq 'Stopped') { Start-WebAppPool -Name $name } else { Restart-WebAppPool -Name $name }
    }
} | Out-Null
$result = [pscustomobject]@{ Server = {server}; AppPools = @({app_pool}); Recycled = $true }
