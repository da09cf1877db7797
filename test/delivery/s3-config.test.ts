import {afterEach, describe, expect, it} from 'vitest'
import {parseS3Uri, s3ClientConfig} from '../../src/delivery/targets/s3-client.js'
import {isTransient} from '../../src/delivery/targets/s3.js'

const saved = {...process.env}
afterEach(() => {
  for (const k of ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_DEFAULT_REGION']) {
    if (saved[k] === undefined) delete process.env[k]
    else process.env[k] = saved[k]
  }
})

describe('S3 connection settings', () => {
  it('takes endpoint and region from the AWS environment, with pipeline overrides winning', () => {
    delete process.env.AWS_ENDPOINT_URL
    delete process.env.AWS_DEFAULT_REGION
    process.env.AWS_ENDPOINT_URL_S3 = 'http://ceph.internal:7480'
    process.env.AWS_REGION = 'eu-west-3'
    const fromEnv = s3ClientConfig()
    expect(fromEnv).toMatchObject({endpoint: 'http://ceph.internal:7480', region: 'eu-west-3', forcePathStyle: true, requestChecksumCalculation: 'WHEN_REQUIRED'})
    const overridden = s3ClientConfig({endpoint: 'http://other:9000', region: 'us-west-2', forcePathStyle: false})
    expect(overridden).toMatchObject({endpoint: 'http://other:9000', region: 'us-west-2', forcePathStyle: false})
    delete process.env.AWS_ENDPOINT_URL_S3
    delete process.env.AWS_REGION
    const aws = s3ClientConfig()
    expect(aws.endpoint).toBeUndefined()
    expect(aws).toMatchObject({region: 'us-east-1', forcePathStyle: false})
  })

  it('parses s3 URIs and classifies transient failures', () => {
    expect(parseS3Uri('s3://models/fashion/{run.id}/')).toEqual({bucket: 'models', key: 'fashion/{run.id}/'})
    expect(parseS3Uri('s3://models')).toEqual({bucket: 'models', key: ''})
    expect(() => parseS3Uri('s3:///x')).toThrow(/not an S3 URI/)
    expect(isTransient({name: 'ServiceUnavailable', $metadata: {httpStatusCode: 503}})).toBe(true)
    expect(isTransient(Object.assign(new Error('read ECONNRESET'), {code: 'ECONNRESET'}))).toBe(true)
    expect(isTransient({name: 'XAmzContentSHA256Mismatch', $metadata: {httpStatusCode: 400}})).toBe(true)
    expect(isTransient({name: 'AccessDenied', message: 'denied', $metadata: {httpStatusCode: 403}})).toBe(false)
    expect(isTransient({name: 'NoSuchBucket', message: 'no bucket', $metadata: {httpStatusCode: 404}})).toBe(false)
  })
})
