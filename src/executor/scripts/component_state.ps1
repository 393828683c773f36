# cmdlets: Get-ServerComponentState
$state = Get-ServerComponentState -Identity {server} -Component ServerWideOffline
$result = $state | Select-Object Identity, Component, @{ Name = 'State'; Expression = { [string]$_.State } }
