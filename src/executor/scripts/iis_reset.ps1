$reset = Invoke-Command -ComputerName {server} -ScriptBlock {
    $output = iisreset /noforce 2>&1 | Out-String
    [pscustomobject]@{ ExitCode = $LASTEXITCODE; Output = $output.Trim() }
}
if ($reset.ExitCode -ne 0) { throw ('iisreset /noforce exited with code {0}: {1}' -f $reset.ExitCode, $reset.Output) }
$result = [pscustomobject]@{ Server = {server}; ExitCode = $reset.ExitCode; Output = $reset.Output }
