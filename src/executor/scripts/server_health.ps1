# cmdlets: Get-ServerHealth
$result = @(Get-ServerHealth -Identity {server} |
    Where-Object { $_.HealthSetName -like {health_sets} } |
    Select-Object Server, Name, TargetResource, HealthSetName,
        @{ Name = 'AlertValue'; Expression = { [string]$_.AlertValue } },
        @{ Name = 'CurrentHealthSetState'; Expression = { [string]$_.CurrentHealthSetState } },
        LastTransitionTime)
