# cmdlets: Invoke-MonitoringProbe
$result = @(Invoke-MonitoringProbe {probe} -Server {server} |
    Select-Object Server, MonitorIdentity,
        @{ Name = 'ResultType'; Expression = { [string]$_.ResultType } },
        @{ Name = 'Error'; Expression = { [string]$_.Error } },
        @{ Name = 'Exception'; Expression = { [string]$_.Exception } },
        ExecutionStartTime, ExecutionEndTime)
