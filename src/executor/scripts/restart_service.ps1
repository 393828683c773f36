$status = Invoke-Command -ComputerName {server} -Authentication {authentication} -ArgumentList {service} -ScriptBlock {
    param($name)
    $ErrorActionPreference = 'Stop'
    Restart-Service -Name $name -Force
    # Restart-Service returns once the service was asked to start; a service that does not reach Running in two
    # minutes did not restart.
    $service = Get-Service -Name $name
    $service.WaitForStatus('Running', [TimeSpan]::FromMinutes(2))
    [string]$service.Status
}
$result = [pscustomobject]@{ Server = {server}; Service = {service}; Status = [string]$status }
